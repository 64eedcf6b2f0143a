// SPDX-License-Identifier: GPL-2.0

//! The software walk of the guest's own page tables: the guest-virtual to
//! guest-physical translation of `walk_addr_generic()` in
//! `arch/x86/kvm/mmu/paging_tmpl.h`, for every mode the guest's CR0, CR4 and
//! EFER select.
//!
//! With nested paging the hardware walks the guest tables itself, but the
//! hypervisor still translates in software: to fetch the instruction at RIP
//! after a nested page fault on MMIO (there are no decode assists in the
//! emulated CPU), to read string-I/O buffers and for `KVM_TRANSLATE`. The
//! walk is pure logic over [`GuestMem`], so it is host-tested.
//!
//! # What is not modelled
//!
//! - **Accessed and dirty flags are never set.** The C walker sets them
//!   (SDM vol. 3A §4.8) because it also backs shadow paging, where its walk
//!   stands in for the hardware's. Here every walk follows one the hardware
//!   has just made for the same access (the nested page fault being
//!   emulated, or the string instruction being completed), which already set
//!   the flags, and `KVM_TRANSLATE` is a debugging read that must not change
//!   guest memory. [`GuestMem`] therefore only reads.
//! - **Protection keys** (CR4.PKE, SDM §4.6.2): no PKRU is consulted and
//!   [`PFERR_PK`] is never set. In long mode bits 62:59 of a leaf are then
//!   plain ignored bits, as they are with CR4.PKE=0, so no walk fails wrongly;
//!   it only misses the PK faults.
//! - **Shadow-stack accesses** (CET) and the SGX error-code bit.
//! - **Segmentation**: the caller passes a linear address, already through
//!   segment base and limit checks.

/// CR0.WP: supervisor writes honour R/W (SDM vol. 3A §4.6.1).
const CR0_WP: u64 = 1 << 16;
/// CR0.PG: paging enabled (SDM vol. 3A §4.1.1).
const CR0_PG: u64 = 1 << 31;
/// CR4.PSE: 4 MiB pages with 32-bit paging (SDM vol. 3A §4.3).
const CR4_PSE: u64 = 1 << 4;
/// CR4.PAE: 8-byte entries (PAE paging, or long mode with EFER.LMA).
const CR4_PAE: u64 = 1 << 5;
/// CR4.LA57: 5-level paging when long mode is active (SDM vol. 3A §4.5).
const CR4_LA57: u64 = 1 << 12;
/// CR4.SMEP: supervisor-mode execution prevention (SDM vol. 3A §4.6.1).
const CR4_SMEP: u64 = 1 << 20;
/// CR4.SMAP: supervisor-mode access prevention (SDM vol. 3A §4.6.1).
const CR4_SMAP: u64 = 1 << 21;
/// EFER.LMA: long mode active (APM vol. 2 §14.6; SDM vol. 3A §4.1.1).
const EFER_LMA: u64 = 1 << 10;
/// EFER.NXE: the XD bit of 8-byte entries is honoured, not reserved.
const EFER_NXE: u64 = 1 << 11;

/// P: the entry is present.
const PTE_P: u64 = 1 << 0;
/// R/W: writes allowed (for supervisor writes only with CR0.WP=1).
const PTE_RW: u64 = 1 << 1;
/// U/S: user-mode accesses allowed.
const PTE_US: u64 = 1 << 2;
/// PS: the entry maps a large page rather than pointing to a table.
const PTE_PS: u64 = 1 << 7;
/// G in a leaf; reserved in an AMD PML4E/PML5E (see [`PagingCtx::amd`]).
const PTE_BIT8: u64 = 1 << 8;
/// XD/NX: instruction fetches not allowed (8-byte entries, EFER.NXE=1).
const PTE_XD: u64 = 1 << 63;

/// #PF error code P: 0 for a not-present entry, 1 for a protection or
/// reserved-bit violation (SDM vol. 3A §4.7; APM vol. 2 §8.4.2).
pub(crate) const PFERR_PRESENT: u32 = 1 << 0;
/// #PF error code W/R: the access was a write.
pub(crate) const PFERR_WRITE: u32 = 1 << 1;
/// #PF error code U/S: the access was a user-mode access.
pub(crate) const PFERR_USER: u32 = 1 << 2;
/// #PF error code RSVD: a reserved bit was set in a present entry.
pub(crate) const PFERR_RSVD: u32 = 1 << 3;
/// #PF error code I/D: the access was an instruction fetch (only reported
/// with NX or SMEP enabled, see [`not_present_error_code`]).
pub(crate) const PFERR_FETCH: u32 = 1 << 4;
/// #PF error code PK: protection-key violation. Never set by this walker.
// Listed so the error-code bits are complete.
#[allow(dead_code)]
pub(crate) const PFERR_PK: u32 = 1 << 5;

/// 4 KiB: the size of a page mapped by a last-level entry.
pub(crate) const PAGE_SIZE_4K: u64 = 1 << 12;
/// 2 MiB: a large page mapped by a PAE or long-mode PDE.
#[cfg(test)]
pub(crate) const PAGE_SIZE_2M: u64 = 1 << 21;
/// 4 MiB: a large page mapped by a 32-bit PDE with CR4.PSE=1.
pub(crate) const PAGE_SIZE_4M: u64 = 1 << 22;
/// 1 GiB: a huge page mapped by a long-mode PDPTE.
#[cfg(test)]
pub(crate) const PAGE_SIZE_1G: u64 = 1 << 30;

/// The mask of bits `hi` down to `lo`, inclusive; empty when `lo > hi`.
const fn bits(hi: u32, lo: u32) -> u64 {
    if lo > hi || hi > 63 {
        0
    } else {
        (u64::MAX >> (63 - hi)) & (u64::MAX << lo)
    }
}

/// Reads guest-physical memory (the caller implements it over the memory
/// slots). Only reads: see the module documentation for why no accessed or
/// dirty flag is written back.
pub(crate) trait GuestMem {
    /// Reads the 8-byte entry at `gpa` (PAE and long-mode tables); `Err(())`
    /// if no memory slot backs it.
    fn read_u64(&mut self, gpa: u64) -> Result<u64, ()>;
    /// Reads the 4-byte entry at `gpa` (32-bit non-PAE tables); `Err(())` if
    /// no memory slot backs it.
    fn read_u32(&mut self, gpa: u64) -> Result<u32, ()>;
}

/// The paging mode, from CR0.PG, CR4.PAE, EFER.LMA and CR4.LA57
/// (SDM vol. 3A §4.1.1, Table 4-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PagingMode {
    /// CR0.PG=0: linear addresses are physical addresses.
    None,
    /// 32-bit paging: two levels of 4-byte entries (SDM vol. 3A §4.3).
    Bits32,
    /// PAE paging: four PDPTEs, then two levels of 8-byte entries
    /// (SDM vol. 3A §4.4).
    Pae,
    /// 4-level paging, 48-bit linear addresses (SDM vol. 3A §4.5).
    Long4,
    /// 5-level paging, 57-bit linear addresses (SDM vol. 3A §4.5).
    Long5,
}

impl PagingMode {
    /// The level of the first table read from memory through CR3 (for PAE,
    /// the PDPTEs count as level 3).
    const fn top_level(self) -> u8 {
        match self {
            Self::None => 0,
            Self::Bits32 => 2,
            Self::Pae => 3,
            Self::Long4 => 4,
            Self::Long5 => 5,
        }
    }

    /// Whether entries are 8 bytes, with an XD bit (everything but 32-bit).
    const fn wide(self) -> bool {
        matches!(self, Self::Pae | Self::Long4 | Self::Long5)
    }
}

/// The guest's paging configuration, from its CR0, CR3, CR4, EFER and CPUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PagingCtx {
    /// CR0: PG and WP are used.
    pub(crate) cr0: u64,
    /// CR3: the root table (bits 31:12 for 32-bit paging, bits 31:5 for
    /// PAE, bits 51:12 in long mode; the others are PCD/PWT, a PCID or
    /// ignored).
    pub(crate) cr3: u64,
    /// CR4: PSE, PAE, LA57, SMEP and SMAP are used.
    pub(crate) cr4: u64,
    /// EFER: LMA and NXE are used.
    pub(crate) efer: u64,
    /// The guest's MAXPHYADDR (CPUID 0x80000008 EAX[7:0]): address bits at
    /// and above it are reserved in entries (SDM vol. 3A §4.1.4). Values
    /// outside 32..=52 are clamped to that range, the architectural one.
    pub(crate) maxphyaddr: u8,
    /// The guest may map 1 GiB pages (CPUID 0x80000001 EDX[26], Page1GB).
    /// Without it, PS in a long-mode PDPTE is a reserved bit, as in
    /// `reset_guest_rsvds_bits_mask()`.
    pub(crate) gbpages: bool,
    /// The guest's CPUID vendor is AMD or Hygon: bit 8 of a PML4E or PML5E is
    /// then reserved (the APM marks it MBZ; Intel ignores it), as the C KVM's
    /// `guest_cpuid_is_amd_compatible()` decides.
    pub(crate) amd: bool,
}

impl PagingCtx {
    /// The paging mode in use. Long mode is taken from EFER.LMA, the state
    /// the VMCB saves, not from EFER.LME (which is only a request until
    /// CR0.PG is set); CR4.LA57 counts only in long mode.
    pub(crate) fn mode(&self) -> PagingMode {
        if self.cr0 & CR0_PG == 0 {
            PagingMode::None
        } else if self.efer & EFER_LMA != 0 {
            if self.cr4 & CR4_LA57 != 0 {
                PagingMode::Long5
            } else {
                PagingMode::Long4
            }
        } else if self.cr4 & CR4_PAE != 0 {
            PagingMode::Pae
        } else {
            PagingMode::Bits32
        }
    }

    /// MAXPHYADDR, clamped to the architectural 32..=52.
    fn phys_bits(&self) -> u32 {
        u32::from(self.maxphyaddr).clamp(32, 52)
    }

    /// Whether XD is honoured: EFER.NXE with 8-byte entries. 32-bit entries
    /// have no XD bit, so NXE changes nothing there (SDM vol. 3A §4.6.1).
    fn nx(&self, mode: PagingMode) -> bool {
        mode.wide() && self.efer & EFER_NXE != 0
    }

    /// The reserved bits of a present entry at `level` with PS = `ps`
    /// (SDM vol. 3A §4.3-§4.5, the entry-format tables; APM vol. 2 §5.3-§5.4;
    /// `__reset_rsvds_bits_mask()` in `mmu.c`).
    fn reserved_bits(&self, mode: PagingMode, level: u8, ps: bool) -> u64 {
        let m = self.phys_bits();
        let xd = if self.nx(mode) { 0 } else { PTE_XD };
        match mode {
            PagingMode::None => 0,
            PagingMode::Bits32 => {
                if level == 2 && ps && self.cr4 & CR4_PSE != 0 {
                    // A 4 MiB PDE holds address bits 39:32 in bits 20:13
                    // (PSE-36): those beyond MAXPHYADDR, and bit 21, are
                    // reserved. 4 KiB entries have no reserved bits.
                    let m40 = m.min(40);
                    bits(21, 21) | bits(20, 13 + (m40 - 32))
                } else {
                    0
                }
            }
            PagingMode::Pae => {
                // PAE entries may hold addresses up to bit 51, but bits 62:52
                // are reserved, not ignored as in long mode.
                let high = bits(62, m) | xd;
                match (level, ps) {
                    // PDPTE: no R/W, U/S or XD; bits 2:1 and 8:5 reserved.
                    (3, _) => bits(63, m) | bits(8, 5) | bits(2, 1),
                    (2, true) => high | bits(20, 13),
                    _ => high,
                }
            }
            PagingMode::Long4 | PagingMode::Long5 => {
                // Bits 62:52 are ignored (or the protection key of a leaf).
                let high = bits(51, m) | xd;
                match (level, ps) {
                    (4 | 5, _) => {
                        // PS must be 0 above the PDPT: no 512 GiB pages.
                        let bit8 = if self.amd { PTE_BIT8 } else { 0 };
                        high | PTE_PS | bit8
                    }
                    (3, true) if !self.gbpages => high | PTE_PS,
                    (3, true) => high | bits(29, 13),
                    (2, true) => high | bits(20, 13),
                    _ => high,
                }
            }
        }
    }
}

/// What the access is, like the #PF error code bits (SDM vol. 3A §4.7;
/// APM vol. 2 §8.4.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Access {
    /// The access is a write.
    pub(crate) write: bool,
    /// A user-mode access: CPL == 3 and not an implicit supervisor access
    /// (descriptor tables, TSS and the like are supervisor accesses even at
    /// CPL 3, SDM vol. 3A §4.6).
    pub(crate) user: bool,
    /// The access is an instruction fetch.
    pub(crate) fetch: bool,
    /// SMAP lets this supervisor data access reach user pages: RFLAGS.AC=1
    /// and the access is explicit. Must be false for implicit supervisor
    /// accesses, which SMAP checks whatever AC says (SDM vol. 3A §4.6.1).
    /// Ignored for user accesses and fetches, and when CR4.SMAP=0.
    pub(crate) smap_override: bool,
}

/// A successful translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Translation {
    /// The guest-physical address of `gva` itself (page frame and offset).
    pub(crate) gpa: u64,
    /// The size of the page mapping it: 4 KiB, 2 MiB, 4 MiB or 1 GiB.
    pub(crate) page_size: u64,
    /// R/W was 1 at every level (the page is writable by user mode, and by
    /// the supervisor whatever CR0.WP is).
    pub(crate) writable: bool,
    /// U/S was 1 at every level: a user-mode page.
    pub(crate) user: bool,
    /// XD was 1 at some level with NX enabled: fetches are not allowed.
    pub(crate) nx: bool,
}

/// Why a translation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WalkError {
    /// Page fault to inject: the #PF error code (P, W/R, U/S, RSVD, I/D as
    /// the hardware would set them; PK is not modelled). CR2 is the gva.
    PageFault {
        /// The error code pushed with #PF.
        error_code: u32,
    },
    /// A page-table entry (or, for PAE, a PDPTE) at `gpa` is not backed by
    /// guest memory. This walker reports it rather than choosing: the C KVM
    /// injects a not-present #PF (`walk_addr_generic()` takes its `error`
    /// path: P clear, the access's W/U/I bits), which a caller wanting the same
    /// behaviour gets from [`not_present_error_code`]; a caller may instead
    /// treat a table in MMIO space as an emulation failure.
    NoMemory {
        /// The guest-physical address of the entry that could not be read.
        gpa: u64,
    },
    /// In long mode, the gva is not canonical (bits 63:47, or 63:56 with
    /// LA57, are not copies of one bit). No walk happens: the hardware
    /// raises #GP(0), or #SS(0) for a stack-segment reference, never #PF
    /// (SDM vol. 1 §3.3.7.1; APM vol. 2 §5.3.1).
    NonCanonical,
}

/// The rights granted by the entries walked so far.
#[derive(Clone, Copy)]
struct Rights {
    /// R/W=1 at every level.
    write: bool,
    /// U/S=1 at every level.
    user: bool,
    /// XD=1 (with NX enabled) at some level.
    nx: bool,
}

/// The #PF error code for `cause` (0, [`PFERR_PRESENT`], or
/// `PFERR_PRESENT | PFERR_RSVD`) and the access bits.
fn error_code(ctx: &PagingCtx, access: Access, cause: u32) -> u32 {
    let mut code = cause;
    if access.write {
        code |= PFERR_WRITE;
    }
    if access.user {
        code |= PFERR_USER;
    }
    // I/D is reported only with NX in use (CR4.PAE=1 and EFER.NXE=1) or with
    // CR4.SMEP=1 (SDM vol. 3A §4.7; APM vol. 2 §8.4.2). The C KVM sets it on
    // EFER.NXE alone, also under 32-bit paging; this follows the hardware.
    if access.fetch && (ctx.nx(ctx.mode()) || ctx.cr4 & CR4_SMEP != 0) {
        code |= PFERR_FETCH;
    }
    code
}

/// The #PF error code of a not-present fault for `access`: what the C KVM
/// injects when a page-table page is not backed by memory
/// ([`WalkError::NoMemory`]).
pub(crate) fn not_present_error_code(ctx: &PagingCtx, access: Access) -> u32 {
    error_code(ctx, access, 0)
}

/// Whether `access` is allowed to a page with `rights`, by the rules of
/// SDM vol. 3A §4.6.1 (APM vol. 2 §5.6).
fn permitted(ctx: &PagingCtx, access: Access, rights: Rights) -> bool {
    if access.user {
        // User mode needs U/S=1 everywhere, and R/W=1 everywhere to write,
        // whatever CR0.WP is.
        if !rights.user || (access.write && !rights.write) {
            return false;
        }
    } else {
        // Supervisor writes to read-only pages are allowed only with
        // CR0.WP=0 (user pages included, SMAP permitting).
        if access.write && !rights.write && ctx.cr0 & CR0_WP != 0 {
            return false;
        }
        if rights.user {
            // SMEP: no supervisor fetch from a user page. SMAP: no
            // supervisor data access to one unless AC allows it.
            if access.fetch && ctx.cr4 & CR4_SMEP != 0 {
                return false;
            }
            if !access.fetch && ctx.cr4 & CR4_SMAP != 0 && !access.smap_override {
                return false;
            }
        }
    }
    // `rights.nx` is only ever set with NX enabled, at any CPL.
    !(access.fetch && rights.nx)
}

/// Whether `gva` is a sign extension of its low `bits` bits.
fn is_canonical(gva: u64, bits: u32) -> bool {
    let shift = 64 - bits;
    // The arithmetic shift copies bit `bits - 1` into the bits above it.
    (((gva << shift) as i64) >> shift) as u64 == gva
}

/// Reads the entry at `gpa`, 4 bytes wide under 32-bit paging.
fn read_entry(mem: &mut impl GuestMem, mode: PagingMode, gpa: u64) -> Result<u64, WalkError> {
    let entry = if mode.wide() {
        mem.read_u64(gpa)
    } else {
        mem.read_u32(gpa).map(u64::from)
    };
    entry.map_err(|()| WalkError::NoMemory { gpa })
}

/// The index into the level-`level` table selected by `la`: 10 bits per
/// level under 32-bit paging, 9 bits otherwise.
fn table_index(mode: PagingMode, level: u8, la: u64) -> u64 {
    let level = u32::from(level) - 1;
    if mode.wide() {
        (la >> (12 + 9 * level)) & 0x1ff
    } else {
        (la >> (12 + 10 * level)) & 0x3ff
    }
}

/// Translates `gva` for `access` by walking the guest's tables as the
/// hardware would, without setting accessed or dirty flags.
///
/// The checks come in the hardware's order: a not-present or reserved-bit
/// entry stops the walk at its level (present is tested first, since
/// reserved bits of a not-present entry are not checked, SDM vol. 3A §4.7),
/// and permissions are checked only once a leaf is reached, on the rights
/// combined over all levels (SDM vol. 3A §4.6.1).
///
/// Outside long mode, linear addresses are 32 bits, so the high half of
/// `gva` is dropped; with paging off the gpa is the (32-bit) gva.
pub(crate) fn translate(
    mem: &mut impl GuestMem,
    ctx: &PagingCtx,
    gva: u64,
    access: Access,
) -> Result<Translation, WalkError> {
    let mode = ctx.mode();
    let fault = |cause| WalkError::PageFault {
        error_code: error_code(ctx, access, cause),
    };
    let rsvd = PFERR_PRESENT | PFERR_RSVD;

    let la = match mode {
        PagingMode::None => {
            return Ok(Translation {
                gpa: gva & bits(31, 0),
                page_size: PAGE_SIZE_4K,
                writable: true,
                user: true,
                nx: false,
            });
        }
        PagingMode::Bits32 | PagingMode::Pae => gva & bits(31, 0),
        PagingMode::Long4 | PagingMode::Long5 => {
            let width = if mode == PagingMode::Long5 { 57 } else { 48 };
            if !is_canonical(gva, width) {
                return Err(WalkError::NonCanonical);
            }
            gva
        }
    };

    let mut level = mode.top_level();
    let mut table = match mode {
        PagingMode::Pae => {
            // The PDPTEs are read from CR3[31:5] on every walk, as AMD does
            // (no PDPTE registers: the C KVM's SVM also reloads them from CR3
            // under nested paging), so a reserved bit in a present PDPTE is
            // a #PF with RSVD. On Intel the MOV to CR3 would have raised #GP
            // instead (SDM vol. 3A §4.4.1), so such a walk never happens.
            let gpa = (ctx.cr3 & bits(31, 5)) + ((la >> 30) & 3) * 8;
            let pdpte = read_entry(mem, mode, gpa)?;
            if pdpte & PTE_P == 0 {
                return Err(fault(0));
            }
            if pdpte & ctx.reserved_bits(mode, 3, false) != 0 {
                return Err(fault(rsvd));
            }
            level = 2;
            pdpte & bits(51, 12)
        }
        // Bits above MAXPHYADDR are kept (not masked away): MOV to CR3
        // rejects them, and if one were there the read would fail visibly.
        PagingMode::Long4 | PagingMode::Long5 => ctx.cr3 & bits(51, 12),
        PagingMode::Bits32 | PagingMode::None => ctx.cr3 & bits(31, 12),
    };

    // A PDPTE carries no rights, so they start from "everything allowed".
    let mut rights = Rights {
        write: true,
        user: true,
        nx: false,
    };
    let nx = ctx.nx(mode);
    let entry_size = if mode.wide() { 8 } else { 4 };
    loop {
        let entry = read_entry(mem, mode, table + table_index(mode, level, la) * entry_size)?;
        if entry & PTE_P == 0 {
            return Err(fault(0));
        }
        let ps = entry & PTE_PS != 0;
        if entry & ctx.reserved_bits(mode, level, ps) != 0 {
            return Err(fault(rsvd));
        }
        rights.write &= entry & PTE_RW != 0;
        rights.user &= entry & PTE_US != 0;
        rights.nx |= nx && entry & PTE_XD != 0;

        // PS in a PML4E/PML5E, or in a PDPTE without 1 GiB pages, was
        // rejected as reserved above; in a 32-bit PDE it counts only with
        // CR4.PSE (otherwise it is ignored, SDM vol. 3A §4.3). In a PTE,
        // bit 7 is PAT.
        let large = level > 1 && ps && (mode.wide() || ctx.cr4 & CR4_PSE != 0);
        if level == 1 || large {
            if !permitted(ctx, access, rights) {
                return Err(fault(PFERR_PRESENT));
            }
            let (page_size, frame) = match mode {
                PagingMode::Bits32 if large => {
                    // PSE-36: bits 20:13 hold address bits 39:32.
                    let high = ((entry >> 13) & 0xff) << 32;
                    (PAGE_SIZE_4M, (entry & bits(31, 22)) | high)
                }
                PagingMode::Bits32 => (PAGE_SIZE_4K, entry & bits(31, 12)),
                _ => {
                    let size = 1u64 << (12 + 9 * (u32::from(level) - 1));
                    // Bit 12 of a large-page entry is PAT, not address.
                    (size, entry & bits(51, 12) & !(size - 1))
                }
            };
            return Ok(Translation {
                gpa: frame | (la & (page_size - 1)),
                page_size,
                writable: rights.write,
                user: rights.user,
                nx: rights.nx,
            });
        }
        table = if mode.wide() {
            entry & bits(51, 12)
        } else {
            entry & bits(31, 12)
        };
        level -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::boxed::Box;
    use std::collections::HashMap;

    const CR0_PE: u64 = 1 << 0;
    const EFER_LME: u64 = 1 << 8;

    /// Guest memory made of 4 KiB pages; reading an absent page fails.
    #[derive(Default)]
    struct Mem {
        pages: HashMap<u64, Box<[u8; 4096]>>,
    }

    impl Mem {
        fn page(&mut self, gpa: u64) -> &mut [u8; 4096] {
            self.pages
                .entry(gpa >> 12)
                .or_insert_with(|| Box::new([0; 4096]))
        }

        fn bytes(&self, gpa: u64, n: usize) -> Result<&[u8], ()> {
            let page = self.pages.get(&(gpa >> 12)).ok_or(())?;
            let off = (gpa & 0xfff) as usize;
            page.get(off..off + n).ok_or(())
        }

        fn put(&mut self, gpa: u64, v: u64, n: usize) {
            let off = (gpa & 0xfff) as usize;
            self.page(gpa)[off..off + n].copy_from_slice(&v.to_le_bytes()[..n]);
        }
    }

    impl GuestMem for Mem {
        fn read_u64(&mut self, gpa: u64) -> Result<u64, ()> {
            let b = self.bytes(gpa, 8)?;
            Ok(u64::from_le_bytes(b.try_into().unwrap()))
        }

        fn read_u32(&mut self, gpa: u64) -> Result<u32, ()> {
            let b = self.bytes(gpa, 4)?;
            Ok(u32::from_le_bytes(b.try_into().unwrap()))
        }
    }

    const P: u64 = PTE_P;
    const RW: u64 = PTE_RW;
    const US: u64 = PTE_US;
    const PS: u64 = PTE_PS;
    const XD: u64 = PTE_XD;
    /// Flags of the intermediate entries `Tables::map` creates.
    const UPPER: u64 = P | RW | US;

    /// Page tables under construction for one mode, rooted at CR3 = 0x1000,
    /// with table pages taken from 0x10_0000 upwards.
    struct Tables {
        mem: Mem,
        mode: PagingMode,
        next: u64,
    }

    const ROOT: u64 = 0x1000;

    impl Tables {
        fn new(mode: PagingMode) -> Self {
            let mut mem = Mem::default();
            mem.page(ROOT);
            Self {
                mem,
                mode,
                next: 0x10_0000,
            }
        }

        fn size(&self) -> u64 {
            if self.mode.wide() {
                8
            } else {
                4
            }
        }

        fn index(&self, gva: u64, level: u8) -> u64 {
            if self.mode == PagingMode::Pae && level == 3 {
                (gva >> 30) & 3
            } else {
                table_index(self.mode, level, gva)
            }
        }

        fn get(&self, gpa: u64) -> u64 {
            let n = self.size() as usize;
            let mut w = [0u8; 8];
            w[..n].copy_from_slice(self.mem.bytes(gpa, n).unwrap());
            u64::from_le_bytes(w)
        }

        fn set(&mut self, gpa: u64, v: u64) {
            let n = self.size() as usize;
            self.mem.put(gpa, v, n);
        }

        fn addr(&self, entry: u64) -> u64 {
            entry
                & if self.mode.wide() {
                    bits(51, 12)
                } else {
                    bits(31, 12)
                }
        }

        /// The gpa of the level-`level` entry for `gva`, through existing tables.
        fn slot(&self, gva: u64, level: u8) -> u64 {
            let mut table = ROOT;
            for l in (level + 1..=self.mode.top_level()).rev() {
                table = self.addr(self.get(table + self.index(gva, l) * self.size()));
            }
            table + self.index(gva, level) * self.size()
        }

        /// Maps `gva` with `leaf` as its level-`level` entry, creating the
        /// tables above it (PDPTEs get only P, their other bits being reserved).
        fn map(&mut self, gva: u64, level: u8, leaf: u64) -> &mut Self {
            let mut table = ROOT;
            for l in (level + 1..=self.mode.top_level()).rev() {
                let at = table + self.index(gva, l) * self.size();
                let mut e = self.get_or_zero(at);
                if e & P == 0 {
                    let new = self.next;
                    self.next += 0x1000;
                    self.mem.page(new);
                    let flags = if self.mode == PagingMode::Pae && l == 3 {
                        P
                    } else {
                        UPPER
                    };
                    e = new | flags;
                    self.set(at, e);
                }
                table = self.addr(e);
            }
            let at = table + self.index(gva, level) * self.size();
            self.set(at, leaf);
            self
        }

        fn get_or_zero(&mut self, gpa: u64) -> u64 {
            self.mem.page(gpa);
            self.get(gpa)
        }

        /// ORs `or` into, and clears `clear` from, the level-`level` entry.
        fn modify(&mut self, gva: u64, level: u8, or: u64, clear: u64) -> &mut Self {
            let at = self.slot(gva, level);
            let e = self.get(at);
            self.set(at, (e | or) & !clear);
            self
        }

        fn walk(
            &mut self,
            ctx: &PagingCtx,
            gva: u64,
            access: Access,
        ) -> Result<Translation, WalkError> {
            translate(&mut self.mem, ctx, gva, access)
        }
    }

    /// A context for `mode` with CR0.WP=1, MAXPHYADDR 40, 1 GiB pages, AMD.
    fn ctx(mode: PagingMode) -> PagingCtx {
        let (cr0, cr4, efer) = match mode {
            PagingMode::None => (CR0_PE, 0, 0),
            PagingMode::Bits32 => (CR0_PE | CR0_PG | CR0_WP, 0, 0),
            PagingMode::Pae => (CR0_PE | CR0_PG | CR0_WP, CR4_PAE, 0),
            PagingMode::Long4 => (CR0_PE | CR0_PG | CR0_WP, CR4_PAE, EFER_LME | EFER_LMA),
            PagingMode::Long5 => (
                CR0_PE | CR0_PG | CR0_WP,
                CR4_PAE | CR4_LA57,
                EFER_LME | EFER_LMA,
            ),
        };
        PagingCtx {
            cr0,
            cr3: ROOT,
            cr4,
            efer,
            maxphyaddr: 40,
            gbpages: true,
            amd: true,
        }
    }

    const READ: Access = Access {
        write: false,
        user: false,
        fetch: false,
        smap_override: false,
    };
    const WRITE: Access = Access {
        write: true,
        ..READ
    };
    const FETCH: Access = Access {
        fetch: true,
        ..READ
    };
    const UREAD: Access = Access { user: true, ..READ };
    const UWRITE: Access = Access {
        user: true,
        write: true,
        ..READ
    };
    const UFETCH: Access = Access {
        user: true,
        fetch: true,
        ..READ
    };

    fn pf(error_code: u32) -> Result<Translation, WalkError> {
        Err(WalkError::PageFault { error_code })
    }

    fn ok(
        gpa: u64,
        page_size: u64,
        writable: bool,
        user: bool,
        nx: bool,
    ) -> Result<Translation, WalkError> {
        Ok(Translation {
            gpa,
            page_size,
            writable,
            user,
            nx,
        })
    }

    const RSVD: u32 = PFERR_PRESENT | PFERR_RSVD;

    #[test]
    fn mode_from_control_registers() {
        let mut c = ctx(PagingMode::Bits32);
        assert_eq!(c.mode(), PagingMode::Bits32);
        // LA57 and LME mean nothing outside long mode.
        c.cr4 |= CR4_LA57;
        c.efer |= EFER_LME;
        assert_eq!(c.mode(), PagingMode::Bits32);
        c.cr4 |= CR4_PAE;
        assert_eq!(c.mode(), PagingMode::Pae);
        c.efer |= EFER_LMA;
        assert_eq!(c.mode(), PagingMode::Long5);
        c.cr4 &= !CR4_LA57;
        assert_eq!(c.mode(), PagingMode::Long4);
        c.cr0 &= !CR0_PG;
        assert_eq!(c.mode(), PagingMode::None);
        for m in [
            PagingMode::None,
            PagingMode::Bits32,
            PagingMode::Pae,
            PagingMode::Long4,
            PagingMode::Long5,
        ] {
            assert_eq!(ctx(m).mode(), m);
        }
    }

    #[test]
    fn paging_off_is_identity_on_32_bits() {
        let mut mem = Mem::default();
        let c = ctx(PagingMode::None);
        let r = translate(&mut mem, &c, 0x1_2345_6789, UWRITE);
        assert_eq!(r, ok(0x2345_6789, PAGE_SIZE_4K, true, true, false));
    }

    #[test]
    fn bits32_4k() {
        let mut t = Tables::new(PagingMode::Bits32);
        t.map(0x0040_1000, 1, 0x0012_3000 | P | RW | US);
        let c = ctx(PagingMode::Bits32);
        let want = ok(0x0012_3234, PAGE_SIZE_4K, true, true, false);
        assert_eq!(t.walk(&c, 0x0040_1234, UWRITE), want);
        // The high half of a 32-bit linear address does not exist.
        assert_eq!(t.walk(&c, 0xffff_ffff_0040_1234, READ), want);
        // 4-byte entries have no XD: NXE changes nothing.
        let mut nxe = c;
        nxe.efer |= EFER_NXE;
        assert_eq!(t.walk(&nxe, 0x0040_1234, UFETCH), want);
    }

    #[test]
    fn bits32_4k_entries_have_no_reserved_bits() {
        let mut t = Tables::new(PagingMode::Bits32);
        // PAT (bit 7), G and the ignored bits set in the PTE; a PDE with bits
        // 8 and 6 set (ignored in a PDE pointing to a table).
        t.map(0xffff_f000, 1, 0xffff_ffff);
        t.modify(0xffff_f000, 2, 0x140, 0);
        let c = ctx(PagingMode::Bits32);
        assert_eq!(
            t.walk(&c, 0xffff_fabc, UWRITE),
            ok(0xffff_fabc, PAGE_SIZE_4K, true, true, false)
        );
    }

    #[test]
    fn bits32_4m_with_pse() {
        let mut t = Tables::new(PagingMode::Bits32);
        t.map(0x00c0_0000, 2, 0x0080_0000 | P | RW | PS);
        let mut c = ctx(PagingMode::Bits32);
        c.cr4 |= CR4_PSE;
        assert_eq!(
            t.walk(&c, 0x00c1_2345, WRITE),
            ok(0x0081_2345, PAGE_SIZE_4M, true, false, false)
        );
        // Bit 12 (PAT) is not an address bit.
        t.modify(0x00c0_0000, 2, 1 << 12, 0);
        assert_eq!(
            t.walk(&c, 0x00ff_ffff, READ),
            ok(0x00bf_ffff, PAGE_SIZE_4M, true, false, false)
        );
    }

    #[test]
    fn bits32_ps_ignored_without_pse() {
        let mut t = Tables::new(PagingMode::Bits32);
        t.map(0x00c0_3000, 1, 0x0055_5000 | P);
        t.modify(0x00c0_3000, 2, PS, 0);
        let c = ctx(PagingMode::Bits32);
        assert_eq!(
            t.walk(&c, 0x00c0_3010, READ),
            ok(0x0055_5010, PAGE_SIZE_4K, false, false, false)
        );
    }

    #[test]
    fn bits32_pse36_high_bits_up_to_maxphyaddr() {
        let mut t = Tables::new(PagingMode::Bits32);
        let gva = 0x8000_0000;
        t.map(gva, 2, 0x1240_0000 | (0xab << 13) | P | PS);
        let mut c = ctx(PagingMode::Bits32);
        c.cr4 |= CR4_PSE;
        assert_eq!(
            t.walk(&c, gva + 0x1234, READ),
            ok(0xab_1240_1234, PAGE_SIZE_4M, false, false, false)
        );
        // MAXPHYADDR 36: bits 20:17 (address bits 39:36) are reserved.
        c.maxphyaddr = 36;
        assert_eq!(t.walk(&c, gva, READ), pf(RSVD));
        t.modify(gva, 2, 0, 0xf0 << 13);
        assert_eq!(
            t.walk(&c, gva, READ),
            ok(0xb_1240_0000, PAGE_SIZE_4M, false, false, false)
        );
        // Bit 21 is reserved whatever MAXPHYADDR is.
        c.maxphyaddr = 52;
        t.modify(gva, 2, 1 << 21, 0);
        assert_eq!(t.walk(&c, gva, UREAD), pf(RSVD | PFERR_USER));
        // Without CR4.PSE the same PDE points to a table (bits 31:12, none
        // of them reserved): there is none at 0x1261_6000.
        c.cr4 &= !CR4_PSE;
        assert_eq!(
            t.walk(&c, gva, READ),
            Err(WalkError::NoMemory { gpa: 0x1261_6000 })
        );
    }

    #[test]
    fn pae_4k_and_2m() {
        let mut t = Tables::new(PagingMode::Pae);
        t.map(0xc000_1000, 1, 0xa_bcde_f000 | P | RW | US | XD);
        t.map(0x4060_0000, 2, 0xf_ffe0_0000 | P | US | PS | (1 << 12));
        let mut c = ctx(PagingMode::Pae);
        c.efer |= EFER_NXE;
        assert_eq!(
            t.walk(&c, 0xc000_1fff, UWRITE),
            ok(0xa_bcde_ffff, PAGE_SIZE_4K, true, true, true)
        );
        assert_eq!(
            t.walk(&c, 0x407f_ffff, UREAD),
            ok(0xf_ffff_ffff, PAGE_SIZE_2M, false, true, false)
        );
        assert_eq!(t.walk(&c, 0xc000_1000, UFETCH), pf(0x15));
    }

    #[test]
    fn pae_cr3_is_32_byte_aligned_and_32_bits() {
        let mut t = Tables::new(PagingMode::Pae);
        t.map(0x0000_5000, 1, 0x7000 | P);
        // Move the PDPT 0x40 bytes up; the ignored high half and low bits of
        // CR3 do not count.
        let pdpte = t.get(ROOT);
        t.set(ROOT, 0);
        t.set(ROOT + 0x40, pdpte);
        let mut c = ctx(PagingMode::Pae);
        c.cr3 = 0xdead_0000_0000_0000 | ROOT | 0x40 | 0x18;
        assert_eq!(
            t.walk(&c, 0x5004, READ),
            ok(0x7004, PAGE_SIZE_4K, false, false, false)
        );
    }

    #[test]
    fn pae_pdpte_not_present_and_reserved() {
        let mut t = Tables::new(PagingMode::Pae);
        t.map(0x8000_0000, 1, 0x9000 | P | RW | US);
        let c = ctx(PagingMode::Pae);
        // No PDPTE for the first GiB (and reserved bits of a not-present
        // PDPTE are not checked).
        assert_eq!(t.walk(&c, 0x1000, UWRITE), pf(PFERR_WRITE | PFERR_USER));
        t.set(ROOT, !P);
        assert_eq!(t.walk(&c, 0x1000, READ), pf(0));
        // Ignored bits 11:9 and PWT/PCD are fine.
        t.modify(0x8000_0000, 3, 0xe18, 0);
        assert!(t.walk(&c, 0x8000_0000, READ).is_ok());
        for bit in [1, 2, 5, 6, 7, 8, 40, 51, 52, 62, 63] {
            t.modify(0x8000_0000, 3, 1 << bit, 0);
            assert_eq!(t.walk(&c, 0x8000_0000, READ), pf(RSVD), "PDPTE bit {bit}");
            t.modify(0x8000_0000, 3, 0, 1 << bit);
        }
        // Bit 63 stays reserved in a PDPTE with NX enabled.
        let mut nxe = c;
        nxe.efer |= EFER_NXE;
        t.modify(0x8000_0000, 3, XD, 0);
        assert_eq!(t.walk(&nxe, 0x8000_0000, FETCH), pf(RSVD | PFERR_FETCH));
    }

    #[test]
    fn pae_reserved_bits_of_pde_and_pte() {
        let mut t = Tables::new(PagingMode::Pae);
        t.map(0x1000, 1, 0x9000 | P);
        t.map(0x4000_0000, 2, 0x20_0000 | P | PS);
        let mut c = ctx(PagingMode::Pae);
        c.maxphyaddr = 52;
        // Bits 62:52 are reserved with PAE even at MAXPHYADDR 52.
        for (gva, level) in [(0x1000, 1), (0x1000, 2), (0x4000_0000, 2)] {
            t.modify(gva, level, 1 << 52, 0);
            assert_eq!(t.walk(&c, gva, READ), pf(RSVD), "level {level}");
            t.modify(gva, level, 0, 1 << 52);
        }
        // Bits 20:13 of a 2 MiB PDE.
        t.modify(0x4000_0000, 2, 1 << 13, 0);
        assert_eq!(t.walk(&c, 0x4000_0000, WRITE), pf(RSVD | PFERR_WRITE));
    }

    #[test]
    fn xd_is_reserved_without_nxe() {
        for mode in [PagingMode::Pae, PagingMode::Long4] {
            let mut t = Tables::new(mode);
            t.map(0x1000, 1, 0x9000 | P | XD);
            let c = ctx(mode);
            assert_eq!(t.walk(&c, 0x1000, READ), pf(RSVD), "{mode:?}");
            // No I/D: neither NX nor SMEP is enabled.
            assert_eq!(t.walk(&c, 0x1000, FETCH), pf(RSVD), "{mode:?}");
            let mut nxe = c;
            nxe.efer |= EFER_NXE;
            assert_eq!(
                t.walk(&nxe, 0x1000, READ),
                ok(0x9000, PAGE_SIZE_4K, false, false, true)
            );
            assert_eq!(t.walk(&nxe, 0x1000, FETCH), pf(PFERR_PRESENT | PFERR_FETCH));
        }
    }

    #[test]
    fn long4_4k_2m_1g() {
        let mut t = Tables::new(PagingMode::Long4);
        let (a, b, g) = (0xffff_8000_0000_1000, 0x7fff_ffe0_0000, 0x40_0000_0000);
        t.map(a, 1, 0xff_ffff_f000 | P | RW);
        t.map(b, 2, 0x80_0020_0000 | P | RW | US | PS | (1 << 12));
        t.map(g, 3, 0xc0_4000_0000 | P | US | PS | (1 << 12));
        let c = ctx(PagingMode::Long4);
        assert_eq!(
            t.walk(&c, a + 0x123, WRITE),
            ok(0xff_ffff_f123, PAGE_SIZE_4K, true, false, false)
        );
        assert_eq!(
            t.walk(&c, b + 0x1f_fff8, UWRITE),
            ok(0x80_003f_fff8, PAGE_SIZE_2M, true, true, false)
        );
        assert_eq!(
            t.walk(&c, g + 0x3fff_0001, UFETCH),
            ok(0xc0_7fff_0001, PAGE_SIZE_1G, false, true, false)
        );
    }

    #[test]
    fn long4_without_gbpages_ps_in_pdpte_is_reserved() {
        let mut t = Tables::new(PagingMode::Long4);
        t.map(0x4000_0000, 3, 0x4000_0000 | P | PS);
        let mut c = ctx(PagingMode::Long4);
        c.gbpages = false;
        assert_eq!(t.walk(&c, 0x4000_0000, READ), pf(RSVD));
    }

    #[test]
    fn long_large_page_reserved_bits() {
        let mut t = Tables::new(PagingMode::Long4);
        t.map(0x4000_0000, 3, 0x4000_0000 | P | PS);
        t.map(0x20_0000, 2, 0x20_0000 | P | PS);
        let c = ctx(PagingMode::Long4);
        for bit in [13, 20, 29] {
            t.modify(0x4000_0000, 3, 1 << bit, 0);
            assert_eq!(t.walk(&c, 0x4000_0000, READ), pf(RSVD), "1G bit {bit}");
            t.modify(0x4000_0000, 3, 0, 1 << bit);
        }
        for bit in [13, 20] {
            t.modify(0x20_0000, 2, 1 << bit, 0);
            assert_eq!(t.walk(&c, 0x20_0000, READ), pf(RSVD), "2M bit {bit}");
            t.modify(0x20_0000, 2, 0, 1 << bit);
        }
        // Bit 22 of a 2 MiB PDE is an address bit.
        t.modify(0x20_0000, 2, 1 << 22, 0);
        assert_eq!(
            t.walk(&c, 0x20_0000, READ),
            ok(0x60_0000, PAGE_SIZE_2M, false, false, false)
        );
    }

    #[test]
    fn long_ps_and_bit8_in_pml4e_and_pml5e() {
        for mode in [PagingMode::Long4, PagingMode::Long5] {
            let top = mode.top_level();
            let mut t = Tables::new(mode);
            t.map(0x1000, 1, 0x9000 | P);
            let mut c = ctx(mode);
            for level in 4..=top {
                t.modify(0x1000, level, PS, 0);
                assert_eq!(t.walk(&c, 0x1000, READ), pf(RSVD), "{mode:?} PS {level}");
                t.modify(0x1000, level, 0, PS);
                t.modify(0x1000, level, PTE_BIT8, 0);
                c.amd = true;
                assert_eq!(t.walk(&c, 0x1000, READ), pf(RSVD), "{mode:?} G {level}");
                c.amd = false;
                assert!(t.walk(&c, 0x1000, READ).is_ok());
                t.modify(0x1000, level, 0, PTE_BIT8);
            }
            // Bit 8 of a non-leaf PDPTE or PDE is ignored, even on AMD.
            c.amd = true;
            t.modify(0x1000, 3, PTE_BIT8, 0)
                .modify(0x1000, 2, PTE_BIT8, 0);
            assert!(t.walk(&c, 0x1000, READ).is_ok());
        }
    }

    #[test]
    fn maxphyaddr_bounds_every_level() {
        let mut t = Tables::new(PagingMode::Long4);
        let gva = 0x7f00_0000_0000;
        t.map(gva, 1, 0x9000 | P);
        let mut c = ctx(PagingMode::Long4);
        c.maxphyaddr = 39;
        for level in 1..=4 {
            t.modify(gva, level, 1 << 39, 0);
            assert_eq!(t.walk(&c, gva, READ), pf(RSVD), "level {level}");
            t.modify(gva, level, 0, 1 << 39);
        }
        t.modify(gva, 1, (1 << 38) | (1 << 51), 0);
        assert_eq!(t.walk(&c, gva, READ), pf(RSVD));
        c.maxphyaddr = 52;
        assert_eq!(
            t.walk(&c, gva, READ),
            ok(0x8_0040_0000_9000, PAGE_SIZE_4K, false, false, false)
        );
        // Out-of-range MAXPHYADDR values clamp to 32..=52.
        c.maxphyaddr = 0xff;
        assert!(t.walk(&c, gva, READ).is_ok());
        c.maxphyaddr = 0;
        assert_eq!(t.walk(&c, gva, READ), pf(RSVD));
    }

    #[test]
    fn long_bits_62_52_are_ignored() {
        let mut t = Tables::new(PagingMode::Long4);
        t.map(0x1000, 1, 0x9000 | P | bits(62, 52));
        t.modify(0x1000, 4, bits(62, 52), 0)
            .modify(0x1000, 2, bits(62, 52), 0);
        let c = ctx(PagingMode::Long4);
        assert_eq!(
            t.walk(&c, 0x1000, READ),
            ok(0x9000, PAGE_SIZE_4K, false, false, false)
        );
    }

    #[test]
    fn long5_walks_five_levels() {
        let mut t = Tables::new(PagingMode::Long5);
        let gva = 0xff80_0000_1234_5678;
        t.map(gva, 1, 0x33_0000_0000 | P | RW | US);
        let c = ctx(PagingMode::Long5);
        assert_eq!(
            t.walk(&c, gva, UWRITE),
            ok(0x33_0000_0678, PAGE_SIZE_4K, true, true, false)
        );
        // The PML5E chose the table: a different bit 56..48 misses it.
        assert_eq!(t.walk(&c, 0x0000_1000_1234_5678, READ), pf(0));
        // In 4-level mode the same address is not canonical.
        assert_eq!(
            t.walk(&ctx(PagingMode::Long4), gva, READ),
            Err(WalkError::NonCanonical)
        );
    }

    #[test]
    fn non_canonical_addresses() {
        let mut mem = Mem::default();
        mem.page(ROOT);
        let nc = Err(WalkError::NonCanonical);
        let c4 = ctx(PagingMode::Long4);
        for gva in [
            0x0000_8000_0000_0000,
            0xffff_7fff_ffff_ffff,
            0x8000_0000_0000_0000,
        ] {
            assert_eq!(translate(&mut mem, &c4, gva, READ), nc, "{gva:#x}");
        }
        for gva in [0x0000_7fff_ffff_ffff, 0xffff_8000_0000_0000] {
            assert_eq!(translate(&mut mem, &c4, gva, READ), pf(0), "{gva:#x}");
        }
        let c5 = ctx(PagingMode::Long5);
        for gva in [0x0100_0000_0000_0000, 0xfeff_ffff_ffff_ffff] {
            assert_eq!(translate(&mut mem, &c5, gva, UFETCH), nc, "{gva:#x}");
        }
        for gva in [
            0x0000_8000_0000_0000,
            0x00ff_ffff_ffff_ffff,
            0xff00_0000_0000_0000,
        ] {
            assert_eq!(translate(&mut mem, &c5, gva, READ), pf(0), "{gva:#x}");
        }
        // Outside long mode the high half is dropped, never faulted on.
        let mut t = Tables::new(PagingMode::Pae);
        t.map(0x1000, 1, 0x9000 | P);
        assert!(t
            .walk(&ctx(PagingMode::Pae), 0x8000_0000_0000_1000, READ)
            .is_ok());
    }

    #[test]
    fn not_present_at_each_level() {
        for mode in [
            PagingMode::Bits32,
            PagingMode::Pae,
            PagingMode::Long4,
            PagingMode::Long5,
        ] {
            let mut t = Tables::new(mode);
            t.map(0x1000, 1, 0x9000 | P | RW | US);
            let mut c = ctx(mode);
            c.efer |= EFER_NXE;
            for level in 1..=mode.top_level() {
                // Reserved bits of a not-present entry are not checked.
                t.modify(0x1000, level, bits(63, 1), P);
                assert_eq!(t.walk(&c, 0x1000, READ), pf(0), "{mode:?} {level}");
                assert_eq!(t.walk(&c, 0x1000, UWRITE), pf(6), "{mode:?} {level}");
                // I/D needs PAE and NXE (or SMEP).
                let id = if mode.wide() { 0x14 } else { 0x4 };
                assert_eq!(t.walk(&c, 0x1000, UFETCH), pf(id), "{mode:?} {level}");
                let mut smep = c;
                smep.cr4 |= CR4_SMEP;
                assert_eq!(t.walk(&smep, 0x1000, UFETCH), pf(0x14), "{mode:?} {level}");
                t.modify(0x1000, level, P, bits(63, 1));
                t.modify(
                    0x1000,
                    level,
                    if level == 1 { 0x9000 | RW | US } else { 0 },
                    0,
                );
            }
        }
    }

    #[test]
    fn user_and_write_permissions() {
        let mut t = Tables::new(PagingMode::Long4);
        t.map(0x1000, 1, 0x9000 | P | RW);
        t.map(0x20_0000, 1, 0xa000 | P | US);
        let mut c = ctx(PagingMode::Long4);
        // User access to a supervisor page; supervisor access is fine.
        assert_eq!(t.walk(&c, 0x1000, UREAD), pf(5));
        assert_eq!(t.walk(&c, 0x1000, UWRITE), pf(7));
        assert!(t.walk(&c, 0x1000, WRITE).is_ok());
        // Writes to a read-only page: supervisor only with CR0.WP=0.
        assert_eq!(t.walk(&c, 0x20_0000, UWRITE), pf(7));
        assert_eq!(t.walk(&c, 0x20_0000, WRITE), pf(3));
        assert_eq!(
            t.walk(&c, 0x20_0000, UREAD),
            ok(0xa000, PAGE_SIZE_4K, false, true, false)
        );
        c.cr0 &= !CR0_WP;
        assert_eq!(t.walk(&c, 0x20_0000, UWRITE), pf(7));
        assert_eq!(
            t.walk(&c, 0x20_0000, WRITE),
            ok(0xa000, PAGE_SIZE_4K, false, true, false)
        );
    }

    #[test]
    fn rights_combine_over_levels() {
        let mut t = Tables::new(PagingMode::Long4);
        t.map(0x1000, 1, 0x9000 | P | RW | US);
        let mut c = ctx(PagingMode::Long4);
        c.efer |= EFER_NXE;
        // U/S=0 in the PML4E alone makes the page supervisor-only.
        t.modify(0x1000, 4, 0, US);
        assert_eq!(t.walk(&c, 0x1000, UREAD), pf(5));
        assert_eq!(
            t.walk(&c, 0x1000, READ),
            ok(0x9000, PAGE_SIZE_4K, true, false, false)
        );
        // R/W=0 in the PDPTE alone makes it read-only.
        t.modify(0x1000, 4, US, 0).modify(0x1000, 3, 0, RW);
        assert_eq!(t.walk(&c, 0x1000, UWRITE), pf(7));
        // XD in the PDE alone makes it non-executable, at any CPL.
        t.modify(0x1000, 3, RW, 0).modify(0x1000, 2, XD, 0);
        assert_eq!(t.walk(&c, 0x1000, FETCH), pf(0x11));
        assert_eq!(t.walk(&c, 0x1000, UFETCH), pf(0x15));
        assert_eq!(
            t.walk(&c, 0x1000, UWRITE),
            ok(0x9000, PAGE_SIZE_4K, true, true, true)
        );
    }

    #[test]
    fn faults_in_hardware_order() {
        let mut t = Tables::new(PagingMode::Long4);
        t.map(0x1000, 1, 0x9000 | P | RW | US);
        let c = ctx(PagingMode::Long4);
        // A supervisor-only PML4E does not hide a not-present PTE below it:
        // permissions are only checked at the leaf.
        t.modify(0x1000, 4, 0, US).modify(0x1000, 1, 0, P);
        assert_eq!(t.walk(&c, 0x1000, UREAD), pf(PFERR_USER));
        // Nor a reserved bit below it.
        t.modify(0x1000, 1, P | (1 << 45), 0);
        assert_eq!(t.walk(&c, 0x1000, UREAD), pf(RSVD | PFERR_USER));
        // A reserved bit above stops the walk before a not-present PTE.
        t.modify(0x1000, 1, 0, P).modify(0x1000, 3, 1 << 45, 0);
        assert_eq!(t.walk(&c, 0x1000, READ), pf(RSVD));
    }

    #[test]
    fn smep() {
        let mut t = Tables::new(PagingMode::Long4);
        t.map(0x1000, 1, 0x9000 | P | US);
        t.map(0x2000, 1, 0xa000 | P);
        let mut c = ctx(PagingMode::Long4);
        assert!(t.walk(&c, 0x1000, FETCH).is_ok());
        c.cr4 |= CR4_SMEP;
        // I/D is reported through SMEP even with NX off.
        assert_eq!(t.walk(&c, 0x1000, FETCH), pf(0x11));
        assert!(t.walk(&c, 0x1000, UFETCH).is_ok());
        assert!(t.walk(&c, 0x2000, FETCH).is_ok());
        // Data accesses are SMAP's business, not SMEP's.
        assert!(t.walk(&c, 0x1000, READ).is_ok());
        // SMEP also applies to 32-bit paging.
        let mut t = Tables::new(PagingMode::Bits32);
        t.map(0x1000, 1, 0x9000 | P | US);
        let mut c = ctx(PagingMode::Bits32);
        c.cr4 |= CR4_SMEP;
        assert_eq!(t.walk(&c, 0x1000, FETCH), pf(0x11));
    }

    #[test]
    fn smap() {
        let mut t = Tables::new(PagingMode::Long4);
        t.map(0x1000, 1, 0x9000 | P | US);
        t.map(0x2000, 1, 0xa000 | P | RW);
        let mut c = ctx(PagingMode::Long4);
        assert!(t.walk(&c, 0x1000, READ).is_ok());
        c.cr4 |= CR4_SMAP;
        let ac = Access {
            smap_override: true,
            ..READ
        };
        let ac_write = Access { write: true, ..ac };
        assert_eq!(t.walk(&c, 0x1000, READ), pf(1));
        assert_eq!(
            t.walk(&c, 0x1000, ac),
            ok(0x9000, PAGE_SIZE_4K, false, true, false)
        );
        // AC does not make a read-only page writable with CR0.WP=1.
        assert_eq!(t.walk(&c, 0x1000, ac_write), pf(3));
        // User accesses, fetches (SMEP off) and supervisor pages are exempt.
        assert!(t.walk(&c, 0x1000, UREAD).is_ok());
        assert!(t.walk(&c, 0x1000, FETCH).is_ok());
        assert!(t.walk(&c, 0x2000, WRITE).is_ok());
        // With CR0.WP=0, AC=1 allows writing a read-only user page; without
        // AC (or for an implicit access) SMAP still forbids it.
        c.cr0 &= !CR0_WP;
        assert!(t.walk(&c, 0x1000, ac_write).is_ok());
        assert_eq!(t.walk(&c, 0x1000, WRITE), pf(3));
    }

    #[test]
    fn missing_table_page_is_no_memory() {
        // Long mode: drop the page table page.
        let mut t = Tables::new(PagingMode::Long4);
        t.map(0x7000, 1, 0x9000 | P);
        let pte = t.slot(0x7000, 1);
        t.mem.pages.remove(&(pte >> 12));
        let c = ctx(PagingMode::Long4);
        assert_eq!(
            t.walk(&c, 0x7000, READ),
            Err(WalkError::NoMemory { gpa: pte })
        );
        // 32-bit paging reads 4-byte entries.
        let mut t = Tables::new(PagingMode::Bits32);
        t.map(0x7000, 1, 0x9000 | P);
        let pte = t.slot(0x7000, 1);
        assert_eq!(pte & 0xfff, 7 * 4);
        t.mem.pages.remove(&(pte >> 12));
        let c = ctx(PagingMode::Bits32);
        assert_eq!(
            t.walk(&c, 0x7000, READ),
            Err(WalkError::NoMemory { gpa: pte })
        );
        // PAE: the PDPT itself.
        let mut mem = Mem::default();
        let mut c = ctx(PagingMode::Pae);
        c.cr3 = 0x5060;
        assert_eq!(
            translate(&mut mem, &c, 0xc000_0000, READ),
            Err(WalkError::NoMemory { gpa: 0x5078 })
        );
        // What the C KVM would inject instead.
        c.efer |= EFER_NXE;
        assert_eq!(not_present_error_code(&c, UFETCH), 0x14);
        assert_eq!(not_present_error_code(&c, WRITE), 0x2);
    }
}
