"""Construct schemas of the ELF pieces p2mdump reads and writes (little-endian).

ELF64 is what both containers use (``xl dump-core`` is always ELFCLASS64 since
Xen 3.1; host vmcores of x86_64 are ELF64); the ELF32 header and program
header are here so that an i386 core is recognised and read too.  The constants
are the ones of ``elf.h`` / Xen's ``elfstructs.h``.
"""
from __future__ import annotations

from construct import (Aligned, Bytes, Const, Int8ul, Int16ul, Int32ul, Int64ul, Padding,
                       PascalString, Rebuild, Struct, len_, this)

# -- e_ident -------------------------------------------------------------------
ELF_MAGIC = b"\x7fELF"
EI_NIDENT = 16
ELFCLASS32 = 1
ELFCLASS64 = 2
ELFDATA2LSB = 1
EV_CURRENT = 1
ELFOSABI_SYSV = 0

# -- e_type / e_machine ----------------------------------------------------------
ET_CORE = 4
EM_386 = 3
EM_X86_64 = 62
#: guest word size implied by e_machine (Xen dump-core: 62 if guest_width 8, else 3)
MACHINE_WORD_SIZE = {EM_X86_64: 8, EM_386: 4}
MACHINE_NAMES = {EM_386: "EM_386", EM_X86_64: "EM_X86_64"}

# -- section / segment types -----------------------------------------------------
SHT_NULL = 0
SHT_PROGBITS = 1
SHT_STRTAB = 3
SHT_NOTE = 7
SHT_NAMES = {SHT_NULL: "NULL", SHT_PROGBITS: "PROGBITS", SHT_STRTAB: "STRTAB",
             SHT_NOTE: "NOTE"}
PT_NULL = 0
PT_LOAD = 1
PT_NOTE = 4

ElfIdent = Struct(
    "magic" / Const(ELF_MAGIC),
    "ei_class" / Int8ul,
    "ei_data" / Int8ul,
    "ei_version" / Int8ul,
    "ei_osabi" / Int8ul,
    "ei_abiversion" / Int8ul,
    Padding(7),
)


def _ehdr(addr):
    """The ELF header: ``addr`` is the width of addresses and offsets."""
    return Struct(
        "e_ident" / ElfIdent,
        "e_type" / Int16ul,
        "e_machine" / Int16ul,
        "e_version" / Int32ul,
        "e_entry" / addr,
        "e_phoff" / addr,
        "e_shoff" / addr,
        "e_flags" / Int32ul,
        "e_ehsize" / Int16ul,
        "e_phentsize" / Int16ul,
        "e_phnum" / Int16ul,
        "e_shentsize" / Int16ul,
        "e_shnum" / Int16ul,
        "e_shstrndx" / Int16ul,
    )


Elf64_Ehdr = _ehdr(Int64ul)
Elf32_Ehdr = _ehdr(Int32ul)

Elf64_Shdr = Struct(
    "sh_name" / Int32ul,
    "sh_type" / Int32ul,
    "sh_flags" / Int64ul,
    "sh_addr" / Int64ul,
    "sh_offset" / Int64ul,
    "sh_size" / Int64ul,
    "sh_link" / Int32ul,
    "sh_info" / Int32ul,
    "sh_addralign" / Int64ul,
    "sh_entsize" / Int64ul,
)

Elf32_Shdr = Struct(
    "sh_name" / Int32ul,
    "sh_type" / Int32ul,
    "sh_flags" / Int32ul,
    "sh_addr" / Int32ul,
    "sh_offset" / Int32ul,
    "sh_size" / Int32ul,
    "sh_link" / Int32ul,
    "sh_info" / Int32ul,
    "sh_addralign" / Int32ul,
    "sh_entsize" / Int32ul,
)

Elf64_Phdr = Struct(
    "p_type" / Int32ul,
    "p_flags" / Int32ul,
    "p_offset" / Int64ul,
    "p_vaddr" / Int64ul,
    "p_paddr" / Int64ul,
    "p_filesz" / Int64ul,
    "p_memsz" / Int64ul,
    "p_align" / Int64ul,
)

#: note the different field order of the 32-bit program header
Elf32_Phdr = Struct(
    "p_type" / Int32ul,
    "p_offset" / Int32ul,
    "p_vaddr" / Int32ul,
    "p_paddr" / Int32ul,
    "p_filesz" / Int32ul,
    "p_memsz" / Int32ul,
    "p_flags" / Int32ul,
    "p_align" / Int32ul,
)

#: the standard note header; name (namesz bytes) and descriptor follow,
#: each padded to a 4-byte boundary
Elf_Nhdr = Struct(
    "n_namesz" / Int32ul,
    "n_descsz" / Int32ul,
    "n_type" / Int32ul,
)

#: one whole note: the header, then name and descriptor each padded with
#: zeros to a 4-byte boundary (``n_namesz`` counts the name's NUL, the
#: padding is not counted); building fills in both sizes
Elf_Note = Struct(
    "n_namesz" / Rebuild(Int32ul, len_(this.name)),
    "n_descsz" / Rebuild(Int32ul, len_(this.desc)),
    "n_type" / Int32ul,
    "name" / Aligned(4, Bytes(this.n_namesz)),
    "desc" / Aligned(4, Bytes(this.n_descsz)),
)

# -- p2mdump's own note ------------------------------------------------------------
# ``p2mdump extract --format elf`` puts one note in the PT_NOTE segment that
# is program header 0 of its output, saying what the file is and where it
# came from.  Owner name "P2MDUMP"; type NT_P2MDUMP_ORIGIN; the descriptor is
# P2mdumpOrigin, whose leading ``layout`` number changes whenever fields are
# added (readers refuse layouts they do not know).

#: owner name of p2mdump's notes, with the NUL that n_namesz counts
P2MDUMP_NOTE_NAME = b"P2MDUMP\0"
#: n_type of the note describing an ``extract`` output: far from the
#: generic core note types (NT_PRSTATUS 1, NT_PRPSINFO 3, NT_AUXV 6, ...),
#: because readelf, and BFD under gdb, take the note of an unknown owner in a
#: core file by its type alone (a type 1 note would pass for a prstatus)
NT_P2MDUMP_ORIGIN = 0x50324D01
#: the P2mdumpOrigin layout this version writes and reads
P2MDUMP_ORIGIN_LAYOUT = 1

_Text = PascalString(Int16ul, "utf8")

P2mdumpOrigin = Struct(
    "layout" / Int32ul,            # P2MDUMP_ORIGIN_LAYOUT
    "word_size" / Int32ul,         # the guest's: 8 (x86-64) or 4 (i386 PAE)
    "max_pfn" / Int64ul,           # pfns the guest's p2m covers
    "pfn_count" / Int64ul,         # pages the PT_LOAD segments hold
    "unreadable" / Int64ul,        # of them, zero-filled: the image could not deliver
    "vaddr_base" / Int64ul,        # p_vaddr = vaddr_base + p_paddr (0: p_vaddr 0)
    "p2mdump_version" / _Text,
    "image" / _Text,               # the source image's file name (no directory)
    "container" / _Text,           # raw, xc-core or elf
    "representation" / _Text,      # where pfn -> mfn came from: tree, list, xen_p2m-pairs
)

#: header sizes, by ELF class
EHDR = {ELFCLASS64: Elf64_Ehdr, ELFCLASS32: Elf32_Ehdr}
SHDR = {ELFCLASS64: Elf64_Shdr, ELFCLASS32: Elf32_Shdr}
PHDR = {ELFCLASS64: Elf64_Phdr, ELFCLASS32: Elf32_Phdr}
EHDR_SIZE = {c: s.sizeof() for c, s in EHDR.items()}     # 64 / 52
SHDR_SIZE = {c: s.sizeof() for c, s in SHDR.items()}     # 64 / 40
PHDR_SIZE = {c: s.sizeof() for c, s in PHDR.items()}     # 56 / 32
NHDR_SIZE = Elf_Nhdr.sizeof()                             # 12


def note_pad(n: int) -> int:
    """``n`` rounded up to the 4-byte alignment of note names and descriptors."""
    return (n + 3) & ~3


# -- building (the writers use these; readers use the schemas above) -----------------

def build_core_header(*, machine: int, phoff: int = 0, phnum: int = 0, shoff: int = 0,
                      shnum: int = 0, shstrndx: int = 0, abiversion: int = 0) -> bytes:
    """An ELF64 little-endian ET_CORE header."""
    return Elf64_Ehdr.build(dict(
        e_ident=dict(ei_class=ELFCLASS64, ei_data=ELFDATA2LSB, ei_version=EV_CURRENT,
                     ei_osabi=ELFOSABI_SYSV, ei_abiversion=abiversion),
        e_type=ET_CORE, e_machine=machine, e_version=EV_CURRENT, e_entry=0,
        e_phoff=phoff, e_shoff=shoff, e_flags=0, e_ehsize=EHDR_SIZE[ELFCLASS64],
        e_phentsize=PHDR_SIZE[ELFCLASS64], e_phnum=phnum,
        e_shentsize=SHDR_SIZE[ELFCLASS64], e_shnum=shnum, e_shstrndx=shstrndx))


def build_phdr(*, paddr: int, offset: int, filesz: int, memsz: int | None = None,
               vaddr: int = 0, ptype: int = PT_LOAD, flags: int = 6, align: int = 0) -> bytes:
    """An ELF64 program header (PT_LOAD, read/write by default)."""
    return Elf64_Phdr.build(dict(p_type=ptype, p_flags=flags, p_offset=offset, p_vaddr=vaddr,
                                 p_paddr=paddr, p_filesz=filesz,
                                 p_memsz=filesz if memsz is None else memsz, p_align=align))


def build_note(ntype: int, desc: bytes, name: bytes) -> bytes:
    """One note (header, padded name, padded descriptor)."""
    return Elf_Note.build(dict(n_type=ntype, name=name, desc=desc))


def build_shdr(*, name: int, stype: int, offset: int, size: int, addralign: int = 0,
               entsize: int = 0) -> bytes:
    """An ELF64 section header (flags, addr, link and info 0)."""
    return Elf64_Shdr.build(dict(sh_name=name, sh_type=stype, sh_flags=0, sh_addr=0,
                                 sh_offset=offset, sh_size=size, sh_link=0, sh_info=0,
                                 sh_addralign=addralign, sh_entsize=entsize))
