/*
 * c_walker.c - minimal reference walker for a Xen PV p2m tree (3 levels)
 * in a raw machine-memory image (frame m at file offset m * 4096).
 *
 * Usage: c_walker IMAGE TOP_MFN WORD_SIZE MAX_PFN OUT
 *        c_walker --list IMAGE P2M_CR3 P2M_VADDR WORD_SIZE MAX_PFN OUT
 *
 * Writes the same bytes as
 *   p2mdump walk IMAGE --top-mfn TOP_MFN --word-size WORD_SIZE \
 *                --max-pfn MAX_PFN --format raw -o OUT
 * i.e. the raw little-endian leaf words of pfns 0..MAX_PFN-1.
 *
 * What it does, and nothing more (the baseline for the benchmark):
 *   - pread the top page;
 *   - pread each distinct mid page needed once (top slots that name the
 *     same mid MFN share one read);
 *   - for each leaf slot needed (the first ceil(MAX_PFN / per_page)),
 *     pread the leaf page straight into a malloc'd table.  Shared leaf
 *     pages (the p2m_missing / p2m_identity placeholders) are NOT cached:
 *     they are simply read again for every slot that names them.  One
 *     pread per leaf slot, no coalescing of consecutive MFNs;
 *   - write the first MAX_PFN words to OUT (plain open/write, not atomic).
 *
 * A pointer of 0, or a frame that is not wholly in the image (or cannot be
 * read), makes the pfns below it INVALID (all ones), as p2mdump does.
 * No findings, no checks past max_pfn, no word size detection.
 * Assumes a little-endian host (x86), like the image format.
 *
 * --list walks a linear p2m list instead (the same bytes as
 *   p2mdump walk IMAGE --p2m-cr3 P2M_CR3 --p2m-vaddr P2M_VADDR \
 *                --word-size WORD_SIZE --max-pfn MAX_PFN --format raw -o OUT):
 * for each of the ceil(MAX_PFN / per_page) list pages it translates the
 * page's virtual address through the page tables (4 levels for word size 8,
 * PAE 3 levels with the folded cr3 for word size 4; 64-bit entries, frame
 * mask 0x000FFFFFFFFFF000, present bit tested, no large pages) keeping the
 * last table page read at each level (so a table is read again only when
 * the walk moves to another one), then preads the list page into the table.
 * A non-present entry or a frame not in the image makes the page INVALID.
 *
 * C99, POSIX (pread), no other dependencies:  cc -O2 -o c_walker c_walker.c
 */
#define _XOPEN_SOURCE 700
#define _FILE_OFFSET_BITS 64
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PAGE_SIZE 4096

static int img_fd;
static uint64_t img_frames; /* whole frames in the image */

/* Read frame mfn into buf; 1 on success, 0 if not (wholly) in the image. */
static int read_frame(uint64_t mfn, void *buf)
{
    if (mfn >= img_frames)
        return 0;
    off_t off = (off_t)(mfn * PAGE_SIZE);
    size_t done = 0;
    while (done < PAGE_SIZE) {
        ssize_t n = pread(img_fd, (char *)buf + done, PAGE_SIZE - done, off + (off_t)done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return 0;
        done += (size_t)n;
    }
    return 1;
}

/* Word i of a page of W-byte little-endian words. */
static uint64_t word_at(const unsigned char *page, unsigned ws, size_t i)
{
    if (ws == 8) {
        uint64_t v;
        memcpy(&v, page + i * 8, 8);
        return v;
    } else {
        uint32_t v;
        memcpy(&v, page + i * 4, 4);
        return v;
    }
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s || *end != '\0' || s[0] == '-')
        return 0;
    *out = (uint64_t)v;
    return 1;
}

static void die(const char *msg)
{
    fprintf(stderr, "c_walker: %s\n", msg);
    exit(1);
}

static int write_out(const char *path, const unsigned char *table, size_t total)
{
    int out = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    if (out < 0) {
        perror(path);
        return 5;
    }
    size_t done = 0;
    while (done < total) {
        size_t chunk = total - done;
        if (chunk > ((size_t)1 << 30))
            chunk = (size_t)1 << 30;
        ssize_t n = write(out, table + done, chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            perror(path);
            return 5;
        }
        done += (size_t)n;
    }
    if (close(out) != 0) {
        perror(path);
        return 5;
    }
    return 0;
}

#define PTE_PRESENT 1ULL
#define PTE_FRAME_MASK 0x000FFFFFFFFFF000ULL

static int open_image(const char *path)
{
    img_fd = open(path, O_RDONLY);
    if (img_fd < 0) {
        perror(path);
        return 0;
    }
    struct stat st;
    if (fstat(img_fd, &st) != 0) {
        perror(path);
        return 0;
    }
    img_frames = (uint64_t)st.st_size / PAGE_SIZE;
    return 1;
}

static int list_main(int argc, char **argv)
{
    uint64_t cr3, vaddr, ws64, max_pfn;
    if (argc != 8) {
        fprintf(stderr, "usage: %s --list IMAGE P2M_CR3 P2M_VADDR WORD_SIZE MAX_PFN OUT\n",
                argv[0]);
        return 2;
    }
    if (!parse_u64(argv[3], &cr3) || !parse_u64(argv[4], &vaddr) || !parse_u64(argv[5], &ws64)
        || !parse_u64(argv[6], &max_pfn))
        die("bad number");
    if (ws64 != 4 && ws64 != 8)
        die("word size must be 4 or 8");
    const unsigned ws = (unsigned)ws64;
    const size_t per_page = PAGE_SIZE / ws;
    const int levels = ws == 8 ? 4 : 3;
    uint64_t root = ws == 8 ? cr3 >> 12
                            : (uint32_t)(((uint32_t)cr3 >> 12) | ((uint32_t)cr3 << 20));
    if (!open_image(argv[2]))
        return 3;
    const size_t n_pages = (size_t)((max_pfn + per_page - 1) / per_page);
    unsigned char *table = malloc(n_pages ? n_pages * PAGE_SIZE : 1);
    if (!table)
        die("out of memory");
    /* the last table page read at each level */
    static unsigned char tab[6][PAGE_SIZE];
    uint64_t tab_mfn[6];
    int tab_ok[6];
    for (int l = 0; l < 6; l++)
        tab_mfn[l] = UINT64_MAX;
    for (size_t k = 0; k < n_pages; k++) {
        uint64_t va = vaddr + (uint64_t)k * PAGE_SIZE;
        uint64_t mfn = root;
        int ok = 1;
        for (int l = levels; l >= 1 && ok; l--) {
            if (tab_mfn[l] != mfn) {
                tab_mfn[l] = mfn;
                tab_ok[l] = read_frame(mfn, tab[l]);
            }
            if (!tab_ok[l]) {
                ok = 0;
                break;
            }
            unsigned shift = 12 + 9 * (unsigned)(l - 1);
            uint64_t idx = (va >> shift) & 511;
            uint64_t e;
            memcpy(&e, tab[l] + idx * 8, 8);
            if (!(e & PTE_PRESENT)) {
                ok = 0;
                break;
            }
            mfn = (e & PTE_FRAME_MASK) >> 12;
        }
        unsigned char *row = table + k * PAGE_SIZE;
        if (!ok || mfn == 0 || !read_frame(mfn, row))
            memset(row, 0xff, PAGE_SIZE);
    }
    int rc = write_out(argv[7], table, (size_t)max_pfn * ws);
    free(table);
    close(img_fd);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--list") == 0)
        return list_main(argc, argv);
    uint64_t top_mfn, ws64, max_pfn;
    if (argc != 6) {
        fprintf(stderr, "usage: %s IMAGE TOP_MFN WORD_SIZE MAX_PFN OUT\n", argv[0]);
        return 2;
    }
    if (!parse_u64(argv[2], &top_mfn) || !parse_u64(argv[3], &ws64) || !parse_u64(argv[4], &max_pfn))
        die("bad number");
    if (ws64 != 4 && ws64 != 8)
        die("word size must be 4 or 8");
    const unsigned ws = (unsigned)ws64;
    const size_t per_page = PAGE_SIZE / ws;                 /* 512 or 1024 */
    const uint64_t capacity = (uint64_t)per_page * per_page * per_page;
    if (max_pfn > capacity)
        die("max_pfn is larger than the tree's capacity");

    if (!open_image(argv[1]))
        return 3;

    unsigned char top[PAGE_SIZE];
    if (!read_frame(top_mfn, top))
        die("top MFN is not in the image");

    const size_t n_leaves = (size_t)((max_pfn + per_page - 1) / per_page);
    const size_t n_tops = (n_leaves + per_page - 1) / per_page;

    /* the table: n_leaves whole leaf pages (max_pfn words rounded up) */
    unsigned char *table = malloc(n_leaves ? n_leaves * PAGE_SIZE : 1);
    /* mid pages by top slot; mid_ok[t]: 1 usable, 0 missing */
    unsigned char *mids = malloc(n_tops ? n_tops * PAGE_SIZE : 1);
    unsigned char *mid_ok = calloc(n_tops ? n_tops : 1, 1);
    if (!table || !mids || !mid_ok)
        die("out of memory");

    /* mid level: each distinct mid MFN read once */
    for (size_t t = 0; t < n_tops; t++) {
        uint64_t mfn = word_at(top, ws, t);
        size_t prev;
        if (mfn == 0)
            continue;
        for (prev = 0; prev < t; prev++)
            if (word_at(top, ws, prev) == mfn)
                break;
        if (prev < t) {
            if (mid_ok[prev]) {
                memcpy(mids + t * PAGE_SIZE, mids + prev * PAGE_SIZE, PAGE_SIZE);
                mid_ok[t] = 1;
            }
            continue;
        }
        mid_ok[t] = (unsigned char)read_frame(mfn, mids + t * PAGE_SIZE);
    }

    /* leaf level: one pread per leaf slot, straight into the table */
    for (size_t slot = 0; slot < n_leaves; slot++) {
        size_t t = slot / per_page, m = slot % per_page;
        unsigned char *row = table + slot * PAGE_SIZE;
        uint64_t leaf = mid_ok[t] ? word_at(mids + t * PAGE_SIZE, ws, m) : 0;
        if (leaf == 0 || !read_frame(leaf, row))
            memset(row, 0xff, PAGE_SIZE); /* INVALID_P2M_ENTRY: all ones */
    }

    /* output: the first max_pfn words */
    int rc = write_out(argv[5], table, (size_t)max_pfn * ws);
    if (rc)
        return rc;
    free(table);
    free(mids);
    free(mid_ok);
    close(img_fd);
    return 0;
}
