// SPDX-License-Identifier: GPL-2.0

//! The instruction decoding of `arch/x86/kvm/emulate.c` that an SVM host without
//! NRIPS and decode assists needs: instruction lengths, and the MOV forms that
//! fault on MMIO.
//!
//! Without NRIPS (CPUID Fn8000_000A EDX[3]) the VMCB holds no next RIP on an
//! intercept (APM Vol 2, 15.7.1), so skipping an intercepted CPUID, RDMSR, HLT,
//! IN/OUT... means measuring the instruction at RIP; [`insn_len`] does that, and
//! [`decode_insn`] also names the opcode so the caller can check that the bytes
//! it fetched are the instruction it was told about. Without decode assists a
//! nested page fault on MMIO carries no instruction bytes and no register:
//! [`decode_mmio`] turns the bytes the caller fetched at RIP into one memory
//! access, [`store_value`] gives what a store writes, and [`complete_load`] and
//! [`string_advance`] apply the instruction's effect on the registers.
//!
//! Core-only (host-tested). Encoding rules: Intel SDM Vol 2A, chapter 2 and
//! appendix A; AMD APM Vol 3, chapter 1 and appendix A.

/// The longest instruction: more bytes raise #GP (SDM Vol 2A, 2.1; APM Vol 3, 1.1).
pub(crate) const MAX_INSN_LEN: usize = 15;

/// CPU execution mode, which sets default operand/address sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ExecMode {
    /// Real-address or virtual-8086 mode: 16-bit defaults.
    Real,
    /// Protected mode (or compatibility mode) with a 16-bit code segment (CS.D = 0).
    Prot16,
    /// Protected mode (or compatibility mode) with a 32-bit code segment (CS.D = 1).
    Prot32,
    /// 64-bit mode: EFER.LMA and CS.L; 32-bit operands, 64-bit addresses.
    Long64,
}

impl ExecMode {
    /// The mode the CPU is in, tested in the order of `init_emulate_ctxt()`.
    ///
    /// The C KVM honours CS.D in real and virtual-8086 mode too (a segment cache
    /// left 32-bit by protected mode, "unreal" code): such code decodes with
    /// 32-bit defaults, which is [`ExecMode::Prot32`] here, as sizes are all that
    /// the mode decides in this decoder.
    pub(crate) const fn from_state(
        cr0_pe: bool,
        rflags_vm: bool,
        efer_lma: bool,
        cs_l: bool,
        cs_db: bool,
    ) -> Self {
        if !cr0_pe || rflags_vm {
            if cs_db {
                ExecMode::Prot32
            } else {
                ExecMode::Real
            }
        } else if efer_lma && cs_l {
            ExecMode::Long64
        } else if cs_db {
            ExecMode::Prot32
        } else {
            ExecMode::Prot16
        }
    }

    /// Default operand size in bytes (64-bit mode still defaults to 32 bits).
    const fn default_op_size(self) -> u8 {
        match self {
            ExecMode::Real | ExecMode::Prot16 => 2,
            ExecMode::Prot32 | ExecMode::Long64 => 4,
        }
    }

    /// Default address size in bytes.
    const fn default_addr_size(self) -> u8 {
        match self {
            ExecMode::Real | ExecMode::Prot16 => 2,
            ExecMode::Prot32 => 4,
            ExecMode::Long64 => 8,
        }
    }
}

/// Why an instruction could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// The instruction needs more bytes than were given (the fetch stopped early).
    Truncated,
    /// The instruction would be longer than [`MAX_INSN_LEN`] bytes (#GP).
    TooLong,
    /// A valid encoding this decoder does not handle: VEX, EVEX, XOP, or (for
    /// [`decode_mmio`]) anything but the supported MMIO forms.
    Unsupported,
    /// An encoding that raises #UD: an undefined opcode, LOCK on an instruction
    /// that cannot be locked, an opcode invalid in 64-bit mode.
    Invalid,
}

/// General-purpose register numbers in encoding order: 0=RAX, 1=RCX, 2=RDX,
/// 3=RBX, 4=RSP, 5=RBP, 6=RSI, 7=RDI, 8..15=R8..R15.
///
/// # Invariants
///
/// The number is below 16.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Gpr(u8);

impl Gpr {
    /// RAX: the implicit register of `A0`-`A3`, `LODS` and `STOS`.
    pub(crate) const RAX: Gpr = Gpr(0);
    /// RCX: the count of a `REP` string instruction.
    pub(crate) const RCX: Gpr = Gpr(1);
    /// RSI: the source index of `LODS`.
    pub(crate) const RSI: Gpr = Gpr(6);
    /// RDI: the destination index of `STOS`.
    pub(crate) const RDI: Gpr = Gpr(7);

    /// The register numbered `n`, if `n` names one.
    #[cfg(test)]
    pub(crate) const fn new(n: u8) -> Option<Self> {
        if n < 16 {
            // INVARIANT: checked just above.
            Some(Gpr(n))
        } else {
            None
        }
    }

    /// The index of the register in a `[u64; 16]` register file.
    pub(crate) const fn index(self) -> usize {
        // The mask restates the invariant, so indexing a 16-entry array cannot panic.
        (self.0 & 15) as usize
    }

    /// The register encoded by a 3-bit field and its REX extension bit.
    const fn from_field(field: u8, rex_bit: bool) -> Self {
        // INVARIANT: at most 0b1111.
        Gpr((field & 7) | if rex_bit { 8 } else { 0 })
    }
}

/// Segment registers, in the encoding order of the `Sreg` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seg {
    /// ES (prefix 26).
    Es,
    /// CS (prefix 2E).
    Cs,
    /// SS (prefix 36).
    Ss,
    /// DS (prefix 3E).
    Ds,
    /// FS (prefix 64).
    Fs,
    /// GS (prefix 65).
    Gs,
}

/// A repeat prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rep {
    /// F3: REP / REPE / REPZ (also a mandatory SSE prefix, and XRELEASE).
    Rep,
    /// F2: REPNE / REPNZ (also a mandatory SSE prefix, and XACQUIRE).
    Repne,
}

/// The prefixes of an instruction and the operand and address sizes they give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Prefixes {
    /// The segment override in effect: the last one given, except that in 64-bit
    /// mode CS, DS, ES and SS overrides are ignored, as null prefixes (APM Vol 3,
    /// 1.2.4), so a DS prefix after an FS one leaves FS in effect.
    pub(crate) seg: Option<Seg>,
    /// The last F2/F3 prefix given.
    pub(crate) rep: Option<Rep>,
    /// F0 was given.
    pub(crate) lock: bool,
    /// 66 (operand-size override) was given.
    pub(crate) opsize_override: bool,
    /// 67 (address-size override) was given.
    pub(crate) addrsize_override: bool,
    /// The REX byte (40-4F) in effect: 64-bit mode only, and only when it
    /// immediately precedes the opcode; a legacy prefix after a REX cancels it
    /// (SDM Vol 2A, 2.2.1).
    pub(crate) rex: Option<u8>,
    /// Operand size in bytes by the general rule: 66 toggles 16/32 bits, REX.W
    /// makes 64 bits and wins over 66. Instructions that default to 64 bits in
    /// 64-bit mode (PUSH, POP, near branches) are not special-cased here.
    pub(crate) op_size: u8,
    /// Address size in bytes: 67 toggles 16/32 bits, or 64/32 bits in 64-bit mode.
    pub(crate) addr_size: u8,
}

impl Prefixes {
    /// REX.W: 64-bit operand size.
    pub(crate) const fn rex_w(&self) -> bool {
        matches!(self.rex, Some(r) if r & 8 != 0)
    }

    /// REX.R: extends ModRM.reg.
    pub(crate) const fn rex_r(&self) -> bool {
        matches!(self.rex, Some(r) if r & 4 != 0)
    }

    /// REX.B: extends ModRM.rm, SIB.base or the register in the opcode.
    pub(crate) const fn rex_b(&self) -> bool {
        matches!(self.rex, Some(r) if r & 1 != 0)
    }
}

/// The opcode map an instruction's opcode byte belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpcodeMap {
    /// The one-byte map.
    Primary,
    /// The two-byte map after 0F (including 0F 0F, AMD 3DNow!, whose real
    /// opcode is the trailing byte, kept in [`Insn::imm`]).
    Map0F,
    /// The three-byte map 0F 38 (ModRM, no immediate).
    Map0F38,
    /// The three-byte map 0F 3A (ModRM and an 8-bit immediate).
    Map0F3A,
}

/// A decoded instruction: its length and what identifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Insn {
    /// Length in bytes, at most [`MAX_INSN_LEN`].
    pub(crate) len: usize,
    /// The prefixes.
    pub(crate) prefixes: Prefixes,
    /// The opcode map.
    pub(crate) map: OpcodeMap,
    /// The opcode byte within [`Insn::map`].
    pub(crate) opcode: u8,
    /// The ModRM byte, if the opcode takes one.
    pub(crate) modrm: Option<u8>,
    /// The immediate bytes (moffs and far pointers included), little-endian,
    /// zero-extended; 0 if none.
    pub(crate) imm: u64,
    /// Number of immediate bytes.
    pub(crate) imm_len: u8,
    /// The memory operand is based on rBP or rSP, so it defaults to SS.
    stack_based: bool,
}

impl Insn {
    /// The ModRM.reg field extended by REX.R, if there is a ModRM byte.
    pub(crate) fn modrm_reg(&self) -> Option<u8> {
        self.modrm
            .map(|m| ((m >> 3) & 7) | if self.prefixes.rex_r() { 8 } else { 0 })
    }

    /// Whether the ModRM byte names a memory operand (mod != 3).
    pub(crate) fn has_mem_operand(&self) -> bool {
        matches!(self.modrm, Some(m) if m >> 6 != 3)
    }

    /// The segment of the ModRM memory operand: the override, else SS for rBP-
    /// and rSP-based forms and DS for the others (SDM Vol 1, 3.7.4).
    pub(crate) fn modrm_segment(&self) -> Seg {
        match self.prefixes.seg {
            Some(s) => s,
            None if self.stack_based => Seg::Ss,
            None => Seg::Ds,
        }
    }
}

// Opcode-table entries: an immediate kind in the low nibble and flag bits.
/// No immediate.
const IMM_NONE: u8 = 0;
/// 8-bit immediate.
const IMM_B: u8 = 1;
/// 16-bit immediate.
const IMM_W: u8 = 2;
/// 16- or 32-bit immediate by operand size (32 bits under REX.W too).
const IMM_Z: u8 = 3;
/// 16-, 32- or 64-bit immediate by operand size: only MOV r, imm (B8+r).
const IMM_V: u8 = 4;
/// Far pointer: 16- or 32-bit offset, then a 16-bit selector.
const IMM_FAR: u8 = 5;
/// moffs: an offset of the address size (A0-A3).
const IMM_MOFFS: u8 = 6;
/// ENTER: 16-bit frame size, then 8-bit nesting level.
const IMM_ENTER: u8 = 7;
/// Near relative branch: rel16/rel32 by operand size, always rel32 in 64-bit mode.
const IMM_REL: u8 = 8;
/// Group 3 (F6/F7): TEST /0 and /1 take an immediate (8-bit for F6), the others not.
const IMM_GRP3: u8 = 9;
/// Mask of the immediate kind.
const IMM_MASK: u8 = 0x0f;
/// The opcode takes a ModRM byte.
const MODRM: u8 = 0x10;
/// #UD in 64-bit mode.
const INV64: u8 = 0x20;
/// #UD in every mode.
const UNDEF: u8 = 0x40;
/// Prefix, escape or VEX/EVEX byte: handled before the table is consulted.
const SPECIAL: u8 = 0x80;

// Short names for the table cells.
const __: u8 = IMM_NONE;
const IB: u8 = IMM_B;
const IW: u8 = IMM_W;
const IZ: u8 = IMM_Z;
const IV: u8 = IMM_V;
const JZ: u8 = IMM_REL;
const MO: u8 = IMM_MOFFS;
const EN: u8 = IMM_ENTER;
const FP: u8 = IMM_FAR | INV64;
const RM: u8 = MODRM;
const RB: u8 = MODRM | IMM_B;
const RZ: u8 = MODRM | IMM_Z;
const G3: u8 = MODRM | IMM_GRP3;
const L_: u8 = INV64;
const LB: u8 = INV64 | IMM_B;
const LR: u8 = INV64 | MODRM | IMM_B;
const UD: u8 = UNDEF;
const XX: u8 = SPECIAL;

/// The one-byte map (SDM Vol 2D, table A-2; APM Vol 3, appendix A.1).
///
/// 40-4F are INC/DEC here and REX in 64-bit mode (taken by the prefix loop);
/// 62, C4 and C5 are BOUND, LES and LDS, or EVEX and VEX ([`decode_insn`]);
/// D6 (SALC) is undocumented and treated as undefined.
#[rustfmt::skip]
static ONE_BYTE: [u8; 256] = [
    // 0   1   2   3   4   5   6   7   8   9   A   B   C   D   E   F
    RM, RM, RM, RM, IB, IZ, L_, L_, RM, RM, RM, RM, IB, IZ, L_, XX, // 0
    RM, RM, RM, RM, IB, IZ, L_, L_, RM, RM, RM, RM, IB, IZ, L_, L_, // 1
    RM, RM, RM, RM, IB, IZ, XX, L_, RM, RM, RM, RM, IB, IZ, XX, L_, // 2
    RM, RM, RM, RM, IB, IZ, XX, L_, RM, RM, RM, RM, IB, IZ, XX, L_, // 3
    __, __, __, __, __, __, __, __, __, __, __, __, __, __, __, __, // 4
    __, __, __, __, __, __, __, __, __, __, __, __, __, __, __, __, // 5
    L_, L_, XX, RM, XX, XX, XX, XX, IZ, RZ, IB, RB, __, __, __, __, // 6
    IB, IB, IB, IB, IB, IB, IB, IB, IB, IB, IB, IB, IB, IB, IB, IB, // 7
    RB, RZ, LR, RB, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, // 8
    __, __, __, __, __, __, __, __, __, __, FP, __, __, __, __, __, // 9
    MO, MO, MO, MO, __, __, __, __, IB, IZ, __, __, __, __, __, __, // A
    IB, IB, IB, IB, IB, IB, IB, IB, IV, IV, IV, IV, IV, IV, IV, IV, // B
    RB, RB, IW, __, XX, XX, RB, RZ, EN, __, IW, __, __, IB, L_, __, // C
    RM, RM, RM, RM, LB, LB, UD, __, RM, RM, RM, RM, RM, RM, RM, RM, // D
    IB, IB, IB, IB, IB, IB, IB, IB, JZ, JZ, FP, IB, __, __, __, __, // E
    XX, __, XX, XX, __, __, G3, G3, __, __, __, __, __, __, RM, RM, // F
];

/// The two-byte map after 0F (SDM Vol 2D, table A-3; APM Vol 3, appendix A.1).
///
/// 0F 38 and 0F 3A escape to the three-byte maps; 0F 0F (3DNow!) has a ModRM
/// and a trailing opcode byte, decoded as an immediate; 0F 20-23 (MOV CR/DR)
/// ignore ModRM.mod and 0F 78 takes two immediates after 66 or F2 (SSE4a
/// EXTRQ/INSERTQ): both in [`decode_insn`]. 0F 24/26 (MOV TR) are gone.
#[rustfmt::skip]
static TWO_BYTE: [u8; 256] = [
    // 0   1   2   3   4   5   6   7   8   9   A   B   C   D   E   F
    RM, RM, RM, RM, UD, __, __, __, __, __, UD, __, UD, RM, __, RB, // 0
    RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, // 1
    RM, RM, RM, RM, UD, UD, UD, UD, RM, RM, RM, RM, RM, RM, RM, RM, // 2
    __, __, __, __, __, __, UD, __, XX, UD, XX, UD, UD, UD, UD, UD, // 3
    RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, // 4
    RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, // 5
    RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, // 6
    RB, RB, RB, RB, RM, RM, RM, __, RM, RM, UD, UD, RM, RM, RM, RM, // 7
    JZ, JZ, JZ, JZ, JZ, JZ, JZ, JZ, JZ, JZ, JZ, JZ, JZ, JZ, JZ, JZ, // 8
    RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, // 9
    __, __, __, RM, RB, RM, UD, UD, __, __, __, RM, RB, RM, RM, RM, // A
    RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RB, RM, RM, RM, RM, RM, // B
    RM, RM, RB, RM, RB, RB, RB, RM, __, __, __, __, __, __, __, __, // C
    RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, // D
    RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, // E
    RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, RM, // F
];

/// Reads the instruction bytes in order, enforcing the 15-byte limit before the
/// end of the fetched bytes: an instruction that cannot fit in 15 bytes is
/// [`DecodeError::TooLong`] however few bytes were fetched.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// Reserves the next `n` bytes and returns where they start.
    fn take(&mut self, n: usize) -> Result<usize, DecodeError> {
        let start = self.pos;
        let end = start + n;
        if end > MAX_INSN_LEN {
            return Err(DecodeError::TooLong);
        }
        if end > self.bytes.len() {
            return Err(DecodeError::Truncated);
        }
        self.pos = end;
        Ok(start)
    }

    /// The next byte.
    fn byte(&mut self) -> Result<u8, DecodeError> {
        let at = self.take(1)?;
        Ok(self.bytes[at])
    }

    /// The next `n` (at most 8) bytes as a little-endian number.
    fn le(&mut self, n: usize) -> Result<u64, DecodeError> {
        let at = self.take(n)?;
        Ok(self.bytes[at..at + n]
            .iter()
            .rev()
            .fold(0, |v, &b| (v << 8) | u64::from(b)))
    }
}

/// Reads the SIB byte and displacement a memory ModRM needs (SDM Vol 2A, 2.1.5,
/// tables 2-1 to 2-3; 2.2.1.6 for RIP-relative, which has the same length) and
/// returns whether the base is rBP or rSP.
fn skip_mem_operand(
    c: &mut Cursor<'_>,
    modrm: u8,
    addr_size: u8,
    rex_b: bool,
) -> Result<bool, DecodeError> {
    let md = modrm >> 6;
    let rm = modrm & 7;
    if md == 3 {
        return Ok(false);
    }
    if addr_size == 2 {
        // 16-bit forms have no SIB: [BP+SI], [BP+DI] and [BP+disp] use SS, and
        // mod 0 with rm 6 is a bare disp16.
        let disp = match (md, rm) {
            (0, 6) => 2,
            (0, _) => 0,
            (1, _) => 1,
            _ => 2,
        };
        c.take(disp)?;
        return Ok(rm == 2 || rm == 3 || (rm == 6 && md != 0));
    }
    // 32/64-bit forms: rm 4 brings a SIB; a base field of 5 with mod 0 (rm, or
    // SIB.base) means no base and a disp32 (RIP-relative in 64-bit mode).
    let base = if rm == 4 { c.byte()? & 7 } else { rm };
    let disp = match md {
        0 if base == 5 => 4,
        0 => 0,
        1 => 1,
        _ => 4,
    };
    c.take(disp)?;
    let has_base = !(md == 0 && base == 5);
    // R12 and R13 (REX.B) are not stack registers.
    Ok(has_base && !rex_b && (base == 4 || base == 5))
}

/// Whether LOCK is allowed: a memory destination of ADD, ADC, AND, BTC, BTR,
/// BTS, CMPXCHG, CMPXCHG8B/16B, DEC, INC, NEG, NOT, OR, SBB, SUB, XOR, XADD or
/// XCHG (SDM Vol 2A, "LOCK"), plus AMD's LOCK MOV CR0 that reaches CR8
/// (AltMovCr8, CPUID Fn8000_0001 ECX[4]; APM Vol 3, "MOV CRn").
fn lockable(map: OpcodeMap, opcode: u8, modrm: Option<u8>) -> bool {
    let Some(m) = modrm else {
        return false;
    };
    let reg = (m >> 3) & 7;
    if map == OpcodeMap::Map0F && (opcode == 0x20 || opcode == 0x22) {
        return true;
    }
    if m >> 6 == 3 {
        return false;
    }
    match (map, opcode) {
        // ALU r/m, reg: 00/01, 08/09... 30/31; not CMP (38/39).
        (OpcodeMap::Primary, 0x00..=0x37) => opcode & 7 <= 1,
        (OpcodeMap::Primary, 0x80..=0x83) => reg != 7,
        (OpcodeMap::Primary, 0x86 | 0x87) => true,
        (OpcodeMap::Primary, 0xf6 | 0xf7) => reg == 2 || reg == 3,
        (OpcodeMap::Primary, 0xfe | 0xff) => reg <= 1,
        (OpcodeMap::Map0F, 0xab | 0xb3 | 0xbb | 0xb0 | 0xb1 | 0xc0 | 0xc1) => true,
        (OpcodeMap::Map0F, 0xba) => reg >= 5,
        (OpcodeMap::Map0F, 0xc7) => reg == 1,
        _ => false,
    }
}

/// Reads the prefixes, up to the first byte that is not one, which is returned.
fn read_prefixes(c: &mut Cursor<'_>, mode: ExecMode) -> Result<(Prefixes, u8), DecodeError> {
    let long = mode == ExecMode::Long64;
    let mut p = Prefixes {
        seg: None,
        rep: None,
        lock: false,
        opsize_override: false,
        addrsize_override: false,
        rex: None,
        op_size: mode.default_op_size(),
        addr_size: mode.default_addr_size(),
    };
    let b = loop {
        let b = c.byte()?;
        match b {
            0x26 | 0x2e | 0x36 | 0x3e => {
                if !long {
                    p.seg = Some(match b {
                        0x26 => Seg::Es,
                        0x2e => Seg::Cs,
                        0x36 => Seg::Ss,
                        _ => Seg::Ds,
                    });
                }
            }
            0x64 => p.seg = Some(Seg::Fs),
            0x65 => p.seg = Some(Seg::Gs),
            0x66 => p.opsize_override = true,
            0x67 => p.addrsize_override = true,
            0xf0 => p.lock = true,
            0xf2 => p.rep = Some(Rep::Repne),
            0xf3 => p.rep = Some(Rep::Rep),
            0x40..=0x4f if long => {
                // A later REX replaces this one; a later legacy prefix cancels it.
                p.rex = Some(b);
                continue;
            }
            _ => break b,
        }
        p.rex = None;
    };
    if p.opsize_override {
        p.op_size ^= 6;
    }
    if p.rex_w() {
        p.op_size = 8;
    }
    if p.addrsize_override {
        p.addr_size = if long { 4 } else { p.addr_size ^ 6 };
    }
    Ok((p, b))
}

/// Decodes the instruction at the start of `bytes` far enough to know its length
/// and identity.
pub(crate) fn decode_insn(bytes: &[u8], mode: ExecMode) -> Result<Insn, DecodeError> {
    let long = mode == ExecMode::Long64;
    let mut c = Cursor { bytes, pos: 0 };
    let (p, first) = read_prefixes(&mut c, mode)?;

    let (map, opcode, desc) = if first == 0x0f {
        match c.byte()? {
            0x38 => (OpcodeMap::Map0F38, c.byte()?, MODRM),
            0x3a => (OpcodeMap::Map0F3A, c.byte()?, MODRM | IMM_B),
            b => (OpcodeMap::Map0F, b, TWO_BYTE[usize::from(b)]),
        }
    } else if matches!(first, 0x62 | 0xc4 | 0xc5) {
        // EVEX and VEX: always in 64-bit mode; elsewhere only where BOUND, LES
        // or LDS would have a register operand (SDM Vol 2A, 2.3.5 and 2.7).
        if long {
            return Err(DecodeError::Unsupported);
        }
        (OpcodeMap::Primary, first, MODRM)
    } else {
        (OpcodeMap::Primary, first, ONE_BYTE[usize::from(first)])
    };
    if desc & UNDEF != 0 || (long && desc & INV64 != 0) {
        return Err(DecodeError::Invalid);
    }

    let mut modrm = None;
    let mut stack_based = false;
    if desc & MODRM != 0 {
        let m = c.byte()?;
        let reg = (m >> 3) & 7;
        let md = m >> 6;
        match (map, opcode) {
            (OpcodeMap::Primary, 0x62 | 0xc4 | 0xc5) if md == 3 => {
                return Err(DecodeError::Unsupported)
            }
            // XOP (AMD): 8F with a nonzero reg field is a prefix, not POP.
            (OpcodeMap::Primary, 0x8f) if reg != 0 => return Err(DecodeError::Unsupported),
            // C6/C7 are MOV only as /0; C6 F8 and C7 F8 are XABORT and XBEGIN.
            (OpcodeMap::Primary, 0xc6 | 0xc7) if reg != 0 && m != 0xf8 => {
                return Err(DecodeError::Invalid)
            }
            (OpcodeMap::Primary, 0xfe) if reg >= 2 => return Err(DecodeError::Invalid),
            (OpcodeMap::Primary, 0xff) if reg == 7 || (md == 3 && (reg == 3 || reg == 5)) => {
                return Err(DecodeError::Invalid)
            }
            _ => {}
        }
        // MOV to/from CR and DR treat ModRM as registers whatever mod says
        // (SDM Vol 2B, "MOV—Move to/from Control Registers").
        if !(map == OpcodeMap::Map0F && (0x20..=0x23).contains(&opcode)) {
            stack_based = skip_mem_operand(&mut c, m, p.addr_size, p.rex_b())?;
        }
        modrm = Some(m);
    }
    if p.lock && !lockable(map, opcode, modrm) {
        return Err(DecodeError::Invalid);
    }

    let iz = if p.op_size == 2 { 2 } else { 4 };
    let mut imm_len = match desc & IMM_MASK {
        IMM_B => 1,
        IMM_W => 2,
        IMM_Z => iz,
        IMM_V => p.op_size,
        IMM_FAR => 2 + iz,
        IMM_MOFFS => p.addr_size,
        IMM_ENTER => 3,
        // The C KVM and Intel CPUs ignore 66 on near branches in 64-bit mode;
        // AMD CPUs honour it (rel16). Neither is ever intercepted nor touches
        // MMIO data, so only instruction boundaries in tests depend on this.
        IMM_REL if long => 4,
        IMM_REL => iz,
        IMM_GRP3 if modrm.map_or(0, |m| (m >> 3) & 7) < 2 => {
            if opcode & 1 == 0 {
                1
            } else {
                iz
            }
        }
        _ => 0,
    };
    // SSE4a EXTRQ (66 0F 78 /0 ib ib) and INSERTQ (F2 0F 78 /r ib ib); F2/F3
    // select an SSE form before 66 does. Without them 0F 78 is VMREAD.
    if map == OpcodeMap::Map0F
        && opcode == 0x78
        && (p.rep == Some(Rep::Repne) || (p.rep.is_none() && p.opsize_override))
    {
        imm_len = 2;
    }
    let imm = c.le(usize::from(imm_len))?;

    Ok(Insn {
        len: c.pos,
        prefixes: p,
        map,
        opcode,
        modrm,
        imm,
        imm_len,
        stack_based,
    })
}

/// Length of the instruction at the start of `bytes`: prefixes, REX, opcode map
/// (one-byte, 0F, 0F 38, 0F 3A), ModRM, SIB, displacement by the 16/32/64-bit
/// addressing rules (RIP-relative included), and immediates by the operand-size
/// rules, with the odd ones: F6/F7 TEST imm, C8 ENTER iw,ib, 9A/EA far pointers
/// (#UD in 64-bit mode), A0-A3 moffs of the address size, B8+r imm64 under
/// REX.W, E8/E9 rel32 (rel16 with 66 only outside 64-bit mode), 0F 0F 3DNow!.
///
/// The caller skipping an intercepted instruction should rather use
/// [`decode_insn`] and check the opcode, as the guest may have changed the
/// bytes since the intercept.
pub(crate) fn insn_len(bytes: &[u8], mode: ExecMode) -> Result<usize, DecodeError> {
    decode_insn(bytes, mode).map(|i| i.len)
}

/// The destination of a load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dest {
    /// A general-purpose register.
    Reg {
        /// The register.
        reg: Gpr,
        /// Destination operand size in bytes: 1, 2, 4 or 8.
        width: u8,
        /// AH/CH/DH/BH: bits 8..15 of `reg` (legacy encoding, no REX).
        high_byte: bool,
    },
}

/// How a load widens the bytes read to the destination size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Extend {
    /// Same size: a plain move.
    None,
    /// Zero extension (MOVZX).
    Zero,
    /// Sign extension (MOVSX, MOVSXD).
    Sign,
}

/// The source of a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Src {
    /// A general-purpose register.
    Reg {
        /// The register.
        reg: Gpr,
        /// AH/CH/DH/BH: bits 8..15 of `reg` (legacy encoding, no REX).
        high_byte: bool,
    },
    /// An immediate, already sign-extended to 64 bits.
    Imm(u64),
}

/// The memory access of an MMIO instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MmioOp {
    /// Memory -> register: MOV r,r/m (8A/8B), MOV AL/eAX,moffs (A0/A1),
    /// MOVZX/MOVSX (0F B6/B7/BE/BF), MOVSXD (63 with REX.W), LODS (AC/AD; a
    /// REP form is flagged in [`MmioInsn::rep`]).
    Load {
        /// Bytes read from memory: 1, 2, 4 or 8.
        size: u8,
        /// Where the value goes.
        dst: Dest,
        /// How it is widened.
        ext: Extend,
    },
    /// Register/immediate -> memory: MOV r/m,r (88/89), MOV moffs,AL/eAX
    /// (A2/A3), MOV r/m,imm (C6 /0, C7 /0 with sign-extended imm32 under REX.W),
    /// MOVNTI (0F C3), STOS (AA/AB; a REP form is flagged in [`MmioInsn::rep`]).
    Store {
        /// Bytes written to memory: 1, 2, 4 or 8.
        size: u8,
        /// What is written.
        src: Src,
    },
}

/// An instruction that accesses memory exactly once, as MMIO emulation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MmioInsn {
    /// Length in bytes: RIP advances by this once the instruction completes.
    pub(crate) len: usize,
    /// The access.
    pub(crate) op: MmioOp,
    /// The segment of the access: ES for STOS (which cannot be overridden), else
    /// the override, else DS (SS for rBP/rSP-based ModRM forms).
    pub(crate) seg: Seg,
    /// Address size in bytes; it sizes rSI/rDI/rCX of string instructions.
    pub(crate) addr_size: u8,
    /// LODS or STOS: [`string_advance`] must move rSI or rDI.
    pub(crate) string: bool,
    /// A string instruction with F3 or F2 (which both repeat STOS and LODS):
    /// one access is one iteration; callers that do not iterate must refuse it.
    pub(crate) rep: bool,
}

/// The register operand of ModRM.reg with an 8-bit operand: without any REX,
/// numbers 4-7 are AH, CH, DH, BH; with one, SPL, BPL, SIL, DIL (SDM Vol 2A,
/// 2.2.1.2).
fn reg8(insn: &Insn) -> (Gpr, bool) {
    let n = insn.modrm_reg().unwrap_or(0);
    if insn.prefixes.rex.is_none() && (4..8).contains(&n) {
        (Gpr::from_field(n - 4, false), true)
    } else {
        (Gpr::from_field(n, n >= 8), false)
    }
}

/// The full-size register of ModRM.reg.
fn reg_full(insn: &Insn) -> Gpr {
    let n = insn.modrm_reg().unwrap_or(0);
    Gpr::from_field(n, n >= 8)
}

/// Sign-extends the low `bytes` bytes of `v`.
fn sign_extend(v: u64, bytes: u8) -> u64 {
    let bits = u32::from(bytes.min(8)) * 8;
    if bits == 0 {
        return 0;
    }
    let shift = 64 - bits;
    (((v << shift) as i64) >> shift) as u64
}

/// The low `bytes` bytes of `v`.
fn truncate(v: u64, bytes: u8) -> u64 {
    let bits = u32::from(bytes.min(8)) * 8;
    if bits == 64 {
        v
    } else {
        v & ((1u64 << bits) - 1)
    }
}

/// Where an MMIO instruction's memory operand comes from.
#[derive(Clone, Copy)]
enum Operand {
    /// ModRM memory operand.
    ModRm,
    /// moffs (A0-A3): DS unless overridden.
    Moffs,
    /// LODS: DS:rSI, DS overridable (SDM Vol 2A, "LODS").
    Lods,
    /// STOS: ES:rDI, which no prefix overrides (SDM Vol 2B, "STOS").
    Stos,
}

/// A load into a register.
const fn load(size: u8, reg: Gpr, width: u8, high_byte: bool, ext: Extend) -> MmioOp {
    MmioOp::Load {
        size,
        dst: Dest::Reg {
            reg,
            width,
            high_byte,
        },
        ext,
    }
}

/// A store from a register.
const fn store(size: u8, (reg, high_byte): (Gpr, bool)) -> MmioOp {
    MmioOp::Store {
        size,
        src: Src::Reg { reg, high_byte },
    }
}

/// Decodes an MMIO-faulting instruction; anything but the forms of [`MmioOp`]
/// (including their register-only ModRM forms, which cannot have faulted on
/// MMIO) is [`DecodeError::Unsupported`].
pub(crate) fn decode_mmio(bytes: &[u8], mode: ExecMode) -> Result<MmioInsn, DecodeError> {
    let insn = decode_insn(bytes, mode)?;
    let p = insn.prefixes;
    let osz = p.op_size;
    let mem = insn.has_mem_operand();
    let acc = (Gpr::RAX, false);
    let plain = Extend::None;
    let (op, operand) = match (insn.map, insn.opcode) {
        (OpcodeMap::Primary, 0x88) if mem => (store(1, reg8(&insn)), Operand::ModRm),
        (OpcodeMap::Primary, 0x89) if mem => (store(osz, (reg_full(&insn), false)), Operand::ModRm),
        (OpcodeMap::Primary, 0x8a) if mem => {
            let (r, h) = reg8(&insn);
            (load(1, r, 1, h, plain), Operand::ModRm)
        }
        (OpcodeMap::Primary, 0x8b) if mem => (
            load(osz, reg_full(&insn), osz, false, plain),
            Operand::ModRm,
        ),
        (OpcodeMap::Primary, 0x63) if mem && mode == ExecMode::Long64 && p.rex_w() => (
            load(4, reg_full(&insn), 8, false, Extend::Sign),
            Operand::ModRm,
        ),
        (OpcodeMap::Primary, 0xc6 | 0xc7) if mem => {
            let size = if insn.opcode == 0xc6 { 1 } else { osz };
            // imm32 is sign-extended to 64 bits under REX.W (SDM Vol 2B, "MOV").
            let src = Src::Imm(sign_extend(insn.imm, insn.imm_len));
            (MmioOp::Store { size, src }, Operand::ModRm)
        }
        (OpcodeMap::Primary, 0xa0) => (load(1, Gpr::RAX, 1, false, plain), Operand::Moffs),
        (OpcodeMap::Primary, 0xa1) => (load(osz, Gpr::RAX, osz, false, plain), Operand::Moffs),
        (OpcodeMap::Primary, 0xa2) => (store(1, acc), Operand::Moffs),
        (OpcodeMap::Primary, 0xa3) => (store(osz, acc), Operand::Moffs),
        (OpcodeMap::Primary, 0xaa) => (store(1, acc), Operand::Stos),
        (OpcodeMap::Primary, 0xab) => (store(osz, acc), Operand::Stos),
        (OpcodeMap::Primary, 0xac) => (load(1, Gpr::RAX, 1, false, plain), Operand::Lods),
        (OpcodeMap::Primary, 0xad) => (load(osz, Gpr::RAX, osz, false, plain), Operand::Lods),
        (OpcodeMap::Map0F, 0xb6 | 0xb7 | 0xbe | 0xbf) if mem => {
            let size = if insn.opcode & 1 == 0 { 1 } else { 2 };
            let ext = if insn.opcode & 8 == 0 {
                Extend::Zero
            } else {
                Extend::Sign
            };
            (load(size, reg_full(&insn), osz, false, ext), Operand::ModRm)
        }
        (OpcodeMap::Map0F, 0xc3) if mem => {
            // MOVNTI has no 66/F2/F3 form (SDM Vol 2B, "MOVNTI").
            if p.opsize_override || p.rep.is_some() {
                return Err(DecodeError::Invalid);
            }
            let size = if p.rex_w() { 8 } else { 4 };
            (store(size, (reg_full(&insn), false)), Operand::ModRm)
        }
        _ => return Err(DecodeError::Unsupported),
    };
    let (seg, string) = match operand {
        Operand::ModRm => (insn.modrm_segment(), false),
        Operand::Moffs => (p.seg.unwrap_or(Seg::Ds), false),
        Operand::Lods => (p.seg.unwrap_or(Seg::Ds), true),
        Operand::Stos => (Seg::Es, true),
    };
    Ok(MmioInsn {
        len: insn.len,
        op,
        seg,
        addr_size: p.addr_size,
        string,
        rep: string && p.rep.is_some(),
    })
}

/// Writes `v` to a register as an x86 destination of `width` bytes: 8- and
/// 16-bit writes keep the other bits, 32-bit writes zero bits 32..63 (SDM Vol 1,
/// 3.4.1.1).
fn write_reg(regs: &mut [u64; 16], reg: Gpr, width: u8, high_byte: bool, v: u64) {
    let r = &mut regs[reg.index()];
    *r = match width {
        1 if high_byte => (*r & !0xff00) | ((v & 0xff) << 8),
        1 => (*r & !0xff) | (v & 0xff),
        2 => (*r & !0xffff) | (v & 0xffff),
        4 => v & 0xffff_ffff,
        _ => v,
    };
}

/// Applies a load to the registers, following x86 rules: a 32-bit destination
/// zero-extends into the upper 32 bits in 64-bit mode; 8- and 16-bit
/// destinations keep the other bits; high-byte registers write bits 8..15.
///
/// `value` holds the bytes read, little-endian and zero-extended. A store
/// changes no register; string instructions also need [`string_advance`].
pub(crate) fn complete_load(regs: &mut [u64; 16], op: &MmioOp, value: u64) {
    let MmioOp::Load {
        size,
        dst: Dest::Reg {
            reg,
            width,
            high_byte,
        },
        ext,
    } = *op
    else {
        return;
    };
    let v = match ext {
        Extend::None | Extend::Zero => truncate(value, size),
        Extend::Sign => sign_extend(value, size),
    };
    write_reg(regs, reg, width, high_byte, v);
}

/// The value a store writes: its `size` low bytes are what goes to memory (the
/// rest is zero). A load writes nothing, and gives 0.
pub(crate) fn store_value(regs: &[u64; 16], op: &MmioOp) -> u64 {
    match *op {
        MmioOp::Store { size, src } => {
            let v = match src {
                Src::Reg { reg, high_byte } => regs[reg.index()] >> if high_byte { 8 } else { 0 },
                Src::Imm(v) => v,
            };
            truncate(v, size)
        }
        MmioOp::Load { .. } => 0,
    }
}

/// Adds `delta` to the low `addr_size` bytes of a register the way an address
/// register is updated: 16-bit updates keep bits 16..63, 32-bit ones zero bits
/// 32..63 (as `assign_register()` in the C KVM).
fn add_addr_reg(regs: &mut [u64; 16], reg: Gpr, addr_size: u8, delta: i64) {
    let v = regs[reg.index()].wrapping_add(delta as u64);
    write_reg(regs, reg, addr_size, false, v);
}

/// After the access of a string instruction, moves rSI (LODS) or rDI (STOS) by
/// the access size, down if RFLAGS.DF is set, wrapping at the address size; for
/// REP forms also counts one iteration off rCX. Returns whether the instruction
/// is complete, i.e. RIP should advance by [`MmioInsn::len`]: always for
/// non-REP and non-string instructions (which this leaves alone), and for REP
/// when rCX reaches 0 (SDM Vol 2B, "REP/REPE/REPZ/REPNE/REPNZ"). STOS and LODS
/// look at no flag, so F2 repeats them like F3.
pub(crate) fn string_advance(regs: &mut [u64; 16], insn: &MmioInsn, df: bool) -> bool {
    if !insn.string {
        return true;
    }
    let (index, size) = match insn.op {
        MmioOp::Load { size, .. } => (Gpr::RSI, size),
        MmioOp::Store { size, .. } => (Gpr::RDI, size),
    };
    let step = i64::from(size);
    add_addr_reg(regs, index, insn.addr_size, if df { -step } else { step });
    if !insn.rep {
        return true;
    }
    add_addr_reg(regs, Gpr::RCX, insn.addr_size, -1);
    truncate(regs[Gpr::RCX.index()], insn.addr_size) == 0
}

/// A MOV to or from a control register (0F 22 / 0F 20), as decoded from the
/// instruction bytes when the hardware did not say which register is the
/// operand (SVM without decode assists).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MovCr {
    /// The control register: ModRM.reg extended by REX.R; AMD's LOCK prefix
    /// (AltMovCr8) turns CR0 into CR8.
    pub(crate) cr: u8,
    /// The general-purpose register: ModRM.rm extended by REX.B (mod is
    /// ignored: the operand is always a register).
    pub(crate) gpr: u8,
    /// MOV to CRn (0F 22), else from it.
    pub(crate) to_cr: bool,
    /// Instruction length.
    pub(crate) len: usize,
}

/// Decodes `bytes` as MOV to/from CRn; `None` if it is another instruction.
pub(crate) fn decode_mov_cr(bytes: &[u8], mode: ExecMode) -> Option<MovCr> {
    let i = decode_insn(bytes, mode).ok()?;
    if i.map != OpcodeMap::Map0F || !(i.opcode == 0x20 || i.opcode == 0x22) {
        return None;
    }
    let m = i.modrm?;
    let mut cr = i.modrm_reg()?;
    if i.prefixes.lock && cr == 0 {
        cr = 8;
    }
    let gpr = (m & 7) | if i.prefixes.rex_b() { 8 } else { 0 };
    Some(MovCr { cr, gpr, to_cr: i.opcode == 0x22, len: i.len })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    const L64: ExecMode = ExecMode::Long64;
    const P32: ExecMode = ExecMode::Prot32;
    const P16: ExecMode = ExecMode::Prot16;
    const REAL: ExecMode = ExecMode::Real;

    /// Parses hex bytes, with or without spaces between them.
    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(core::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    /// The encodings of a corpus: comma-separated, one or more per line.
    fn corpus(text: &str) -> Vec<Vec<u8>> {
        text.split([',', '\n'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(hex)
            .collect()
    }

    /// `bytes` followed by filler that must not change the length.
    fn padded(bytes: &[u8], fill: u8) -> Vec<u8> {
        let mut v = bytes.to_vec();
        v.resize(MAX_INSN_LEN + 2, fill);
        v
    }

    // Ground truth: each encoding is one whole instruction, assembled by GNU as
    // from a list of instructions and measured by objdump (binutils 2.44).
    // 64-bit mode: the intercepted instructions (also with redundant prefixes),
    // IN/OUT, every addressing form, immediates, moffs, MOV forms, ALU, LOCK,
    // control flow, system, x87, SSE to SSE4.2, AES/SHA, SSE4a, 3DNow!, VMX.
    const INSNS_64: &str = "
0f a2, 0f 32, 0f 30, f4, 0f 01 d9, 0f 01 d1, 0f 31, 0f 01 f9, 0f 33, 0f 08, 0f 09
0f 01 c8, 0f 01 c9, f3 90, 0f 01 38, 0f 01 3d 78 56 34 12, 43 0f 01 3c ec, 0f 01 df
0f 01 d8, 0f 01 da, 0f 01 db, 0f 01 dc, 0f 01 dd, 0f 01 de, 0f 01 fa, 0f 01 fb, 0f 01 fd
0f 01 fc, 0f 01 fe, 0f 01 ff, 0f 01 f8, 0f 05, 0f 07, 48 cf, cf, cc, cd 80, 0f 0b, 0f aa
2e 0f a2, 66 66 0f a2, f3 0f 32, 26 3e 64 65 0f 30, 48 0f 31, 66 48 f4, 41 0f 01 d9
e4 60, 66 e5 60, e5 60, ec, 66 ed, ed, e6 80, 66 e7 80, e7 80, ee, 66 ef, ef, 6c, 66 6d
6d, 6e, 66 6f, 6f, f3 6c, 66 f3 6f, f3 6f, 67 f3 6e, 66 67 f3 6d, 89 00, 89 04 24
89 45 00, 41 89 04 24, 41 89 45 00, 89 40 08, 89 80 00 10 00 00, 89 44 24 f8
89 05 78 56 34 12, 89 04 98, 89 44 58 08, 89 84 ec 00 10 00 00, 89 04 cd 10 00 00 00
89 04 25 78 56 34 12, 47 89 04 11, 4b 89 44 35 00, 66 89 00, 88 00, 88 23, 40 88 37
44 88 38, 8b 00, 48 8b 00, 66 8b 00, 8a 00, 8a 38, 4c 8b 5a 08, 67 8b 88 44 33 22 11
67 8b 14 73, 67 8b 44 24 11, c6 00 01, 66 c7 00 34 12, c7 00 78 56 34 12
48 c7 00 ff ff ff ff, 48 c7 40 08 ff ff ff 7f, c6 05 78 56 34 12 01
c7 05 10 00 00 00 01 00 00 00, 66 c7 44 44 10 02 00, a0 88 77 66 55 44 33 22 11
a1 88 77 66 55 44 33 22 11, 48 a1 88 77 66 55 44 33 22 11, 66 a1 88 77 66 55 44 33 22 11
a2 88 77 66 55 44 33 22 11, a3 88 77 66 55 44 33 22 11, 48 a3 88 77 66 55 44 33 22 11
66 a3 88 77 66 55 44 33 22 11, 67 a1 44 33 22 11, 67 a2 44 33 22 11
64 48 a1 01 02 03 04 05 06 07 08, 0f b6 00, 66 0f b6 00, 48 0f b6 00, 0f b7 00
4c 0f b7 08, 0f be 00, 66 0f be 00, 48 0f be 00, 0f bf 00, 4c 0f bf 08, 48 63 00
4c 63 54 24 08, 0f c3 00, 48 0f c3 00, 4c 0f c3 05 10 00 00 00, aa, 66 ab, ab, 48 ab, ac
66 ad, ad, 48 ad, f3 aa, f3 48 ab, f3 ad, a4, 48 a5, a6, 66 af, 67 aa, 64 ac
48 b8 88 77 66 55 44 33 22 11, 49 bf 88 77 66 55 44 33 22 11, b8 44 33 22 11
66 b8 22 11, b0 11, 41 b0 11, 66 48 b8 01 02 03 04 05 06 07 08, 48 66 b8 01 02, 03 04 40
b0 01, 04 01, 66 05 34 12, 05 78 56 34 12, 48 05 78 56 34 12, 48 83 c0 01, 83 00 01
48 81 00 00 01 00 00, 11 c3, 1b 08, 4d 21 c1, 80 cb ff, 66 31 45 04, 66 3d 34 12
66 83 38 01, 66 81 38 34 12, a8 01, 66 a9 34 12, a9 78 56 34 12, f6 00 01
66 f7 00 34 12, f7 40 08 78 56 34 12, 48 f7 00 01 00 00 00, f7 10, 48 f7 58 08, f6 20
f7 28, 48 f7 f1, 66 f7 38, 66 69 c0 34 12, 69 00 78 56 34 12, 6b c8 05
48 69 c0 78 56 34 12, 6a 01, 68 78 56 34 12, 66 68 34 12, 50, 41 54, 41 5d, ff 30, 8f 00
9c, 9d, 66 50, e8 00 00 00 00, e9 00 00 00 00, eb 00, 74 00, 0f 84 00 00 00 00, e3 00
e2 00, ff d0, ff 10, ff 60 08, ff 18, ff 28, c3, c2 08 00, cb, ca 08 00, c8 10 00 00
c8 34 12 02, c9, d0 e0, c1 e0 03, 48 d3 e0, d1 00, 48 c1 58 08 05, 0f a4 00 03
48 0f ad c3, 0f ba e0 03, 0f ab 00, 0f ba 30 05, 48 0f bb c3, 0f bc 00, 0f bd c8
f3 0f b8 c8, f3 0f bd 00, f3 48 0f bc c0, f0 83 00 01, f0 ff 00, f0 48 0f c1 03
f0 0f b1 0a, f0 0f c7 08, f0 48 0f c7 08, 48 87 03, f0 0f ba 28 01, f0 f6 10
66 f0 f7 18, f0 48 ff 08, 48 8d 0c 98, 48 8d 05 10 00 00 00, 8d a4 24 78 56 34 12
0f 44 d8, 0f 95 00, 0f 97 c0, 66 98, 98, 48 98, 48 99, 66 99, 99, d7, 90, 66 0f 1f 04 00
0f 1f 00, 66 90, 0f 20 c0, 0f 22 d8, 44 0f 20 c0, 0f 22 e0, 0f 21 f8, 0f 23 c0, 0f 06
0f 01 f0, 0f 01 e0, 0f 01 10, 0f 01 18, 0f 01 00, 0f 01 08, 0f 00 d0, 0f 00 d8, 0f 00 c0
0f 00 c8, 0f 00 e0, 0f 00 28, 0f 02 c8, 0f 03 00, 8c d8, 8e d8, 8c 20, 0f a0, 0f a9
f3 48 0f ae c0, f3 48 0f ae d8, 0f c7 f0, 48 0f c7 f8, 0f 01 d0, f3 0f c7 f8, d9 00
dd 40 08, dd d9, d8 c1, da 00, df e0, d9 38, d9 28, 0f ae 00, 0f ae 08, 0f ae 20
0f ae 28, db e3, 9b, d9 e8, d9 fe, 0f 28 00, 0f 11 08, 66 0f 6f 10, f3 0f 7f 5c 24 08
66 0f 6e c0, 66 48 0f 6e c0, 0f 6f 00, 66 0f e7 00, 0f 58 c8, 66 0f 58 08, f3 0f 58 c8
f2 44 0f 58 78 08, 66 45 0f ef c8, 0f fc c8, 66 0f 70 c8 01, 0f 70 c8 02, 66 0f 71 d0 03
0f 73 f0 01, 66 0f 73 d9 04, 0f c2 c8 01, 0f c6 10 03, 66 0f c4 c0 01, 66 0f c5 c0 01
66 0f 38 00 c8, 66 0f 38 04 08, 66 0f 38 17 c8, 66 0f 38 30 10, f2 0f 38 f0 c0
f2 48 0f 38 f1 00, 0f 38 f0 00, 66 0f 38 dc c8, 0f 3a cc c8 01, 66 0f 3a 0f c8 03
66 0f 3a 14 00 01, 66 0f 3a 22 00 01, 66 48 0f 3a 22 c0 01, 66 0f 3a 08 40 08 01
66 0f 3a 44 c8 11, 66 0f 3a df c8 01, 66 0f 78 c0 02 01, f2 0f 78 c1 02 01, 66 0f 79 c1
f2 0f 79 c1, f2 0f 2b 00, f3 0f 2b 00, 0f 0e, 0f 0f c8 9e, 0f 0f 10 b4
0f 0f 1d 78 56 34 12 0d, 0f 0f 44 98 08 96, 0f 0f d1 bf, 0f 0d 00, 0f 0d 08, 0f 18 08
0f 77, 0f ae 10, 0f ae 18, 0f ae e8, 0f ae f0, 0f ae f8, 0f ae 38, 66 0f ae 38
66 0f ae 30, f3 0f 1e fa, f3 48 0f 1e c8, c7 f8 00 00 00 00, 0f 01 d5, c6 f8 01
0f 01 d6, 0f 01 c1, 0f 01 c2, 0f 01 c3, 0f 01 c4, 0f c7 30, 0f 78 c3, 0f 79 18
66 0f 38 80 00, 66 0f 38 81 00, 0f 37, 0f 34, 0f 35, f5, f8, f9, fa, fb, fc, fd, 9e, 9f
f1
";
    // 32-bit code segment: adds the forms invalid in 64-bit mode (INC/DEC 40-4F,
    // PUSHA, BOUND, ARPL, LES/LDS, far pointers, AAM/AAD, INTO) and 16-bit
    // addressing under 67.
    const INSNS_32: &str = "
0f a2, 0f 32, 0f 30, f4, 0f 01 d9, 0f 01 d1, 0f 31, 0f 01 f9, 0f 33, 0f 08, 0f 09
0f 01 c8, 0f 01 c9, f3 90, 0f 01 38, 0f 01 3d 78 56 34 12, 0f 01 df, 0f 01 d8, 0f 01 de
3e 0f a2, 66 f3 90, e4 60, 66 ed, e7 80, ee, 6c, 6f, 66 f3 6d, 40, 49, 66 40, 60, 61
66 1e, 07, 0e, 16, 17, 27, 2f, 37, 3f, d4 0a, d5 0a, d4 10, ce, 62 01, 63 03, c4 00
c5 4b 08, 67 66 c4 00, 66 c5 96 34 12 00 00, 0f b2 20, 0f b4 00, 0f b5 00
9a 78 56 34 12 10 00, ea 78 56 34 12 10 00, 66 9a 34 12 10 00, 66 ea 34 12 08 00
e8 fb 00 00 00, e9 fb 00 00 00, 66 e8 fc 00, 66 e9 fc 00, 0f 84 fa 00 00 00
a0 44 33 22 11, a1 44 33 22 11, 66 a1 44 33 22 11, a2 44 33 22 11, a3 44 33 22 11
67 a0 22 11, 67 a3 22 11, 89 00, 89 04 24, 89 45 00, 89 45 08, 89 84 98 00 10 00 00
89 04 cd 10 00 00 00, 66 89 00, 88 38, 67 8b 00, 67 66 8b 46 10, 67 8a 81 34 12
67 8b 0d, 66 a1 34 12 00 00, c7 00 78 56 34 12, 66 c7 00 34 12, c6 44 24 10 01
67 c7 00 01 00 00 00, 0f b6 00, 0f b7 00, 66 0f be 00, 0f bf 48 08, 0f c3 00, aa, 66 ab
ab, ac, ad, f3 ab, 64 ac, b8 44 33 22 11, 66 b8 22 11, 05 78 56 34 12, 66 05 34 12
f7 00 78 56 34 12, 66 f7 00 34 12, f6 00 01, 68 78 56 34 12, 66 68 34 12, 6a 01
69 c0 78 56 34 12, 66 69 c0 34 12, c8 10 00 01, c2 04 00, ca 04 00, 0f 20 c0, 0f 22 d8
0f 21 f0, 0f 34, 0f 35, 0f 05, f0 83 00 01, f0 0f c7 08, d9 00, db 38, 0f 0f c8 9e
0f 0f 48 08 9a, 66 0f 78 c0 02 01, f2 0f 78 c1 02 01, 66 0f 38 00 c8, 66 0f 3a 0f c8 03
66 0f c5 c0 01
";
    // 16-bit code segment.
    const INSNS_16: &str = "
0f a2, 0f 32, 0f 30, f4, 0f 01 d9, 0f 31, 0f 08, 0f 09, f3 90, 0f 01 3f, e4 60, ed
66 ef, 6e, f3 6d, 67 66 89 00, 89 07, 89 46 00, 89 46 08, 89 80 00 10, a3 34 12
8a 43 10, 8a 24, 67 66 8b 0c 86, a0 22 11, a1 22 11, 66 a1 22 11, a2 22 11, a3 22 11
67 a0 44 33 22 11, 67 a3 44 33 22 11, c6 07 01, c7 07 34 12, 66 c7 07 78 56 34 12
0f b6 07, 66 0f b6 07, 0f be 04, 66 0f bf 05, aa, ab, 66 ab, ac, ad, f3 ab, 26 ad
b8 22 11, 66 b8 44 33 22 11, 05 34 12, 66 05 44 33 22 11, a9 34 12, f7 07 34 12
66 f7 07 44 33 22 11, 68 34 12, 66 68 78 56 34 12, e8 fd 00, e9 fd 00, 66 e8 fa 00 00 00
0f 84 fc 00, 9a 34 12 10 00, ea 34 12 10 00, 66 9a 78 56 34 12 10 00, c8 08 00 00
c2 02 00, cd 10, cf, c4 07, c5 37, 0f 20 c0, 0f 22 c0, 0f 01 17, 0f 01 1c, 0f 01 f0
0f 01 e0, d4 0a, d5 0a, 62 07, 63 c3
";

    fn check_corpus(text: &str, modes: &[ExecMode]) -> usize {
        let all = corpus(text);
        for bytes in &all {
            for &mode in modes {
                for fill in [0x90, 0x00, 0xff, 0x66] {
                    assert_eq!(
                        insn_len(&padded(bytes, fill), mode),
                        Ok(bytes.len()),
                        "{bytes:02x?} in {mode:?}"
                    );
                }
                assert_eq!(insn_len(bytes, mode), Ok(bytes.len()), "{bytes:02x?}");
                // Every shorter fetch needs more bytes.
                for n in 0..bytes.len() {
                    assert_eq!(
                        insn_len(&bytes[..n], mode),
                        Err(DecodeError::Truncated),
                        "{:02x?} in {mode:?}",
                        &bytes[..n]
                    );
                    let _ = decode_mmio(&bytes[..n], mode);
                }
            }
        }
        all.len()
    }

    #[test]
    fn mov_cr() {
        let d = |s: &str, m| decode_mov_cr(&hex(s), m);
        // mov %rax,%cr8 (REX.R), mov %rcx,%cr0, mov %cr8,%r9.
        assert_eq!(d("44 0f 22 c0", L64), Some(MovCr { cr: 8, gpr: 0, to_cr: true, len: 4 }));
        assert_eq!(d("0f 22 c1", P32), Some(MovCr { cr: 0, gpr: 1, to_cr: true, len: 3 }));
        assert_eq!(d("45 0f 20 c1", L64), Some(MovCr { cr: 8, gpr: 9, to_cr: false, len: 4 }));
        // AltMovCr8: lock mov %eax,%cr0 is CR8; mod is ignored.
        assert_eq!(d("f0 0f 22 c0", P32), Some(MovCr { cr: 8, gpr: 0, to_cr: true, len: 4 }));
        assert_eq!(d("0f 22 05", P32), Some(MovCr { cr: 0, gpr: 5, to_cr: true, len: 3 }));
        assert_eq!(d("0f 23 c0", L64), None);
        assert_eq!(d("89 c0", L64), None);
        assert_eq!(d("", L64), None);
    }

    #[test]
    fn corpus_64() {
        assert!(check_corpus(INSNS_64, &[L64]) > 400);
    }

    #[test]
    fn corpus_32() {
        assert!(check_corpus(INSNS_32, &[P32]) > 130);
    }

    #[test]
    fn corpus_16() {
        assert!(check_corpus(INSNS_16, &[P16, REAL]) > 70);
    }

    // Every opcode of a map, followed by a fixed ModRM/SIB/displacement tail and
    // filler (11 22 33 ...). Each block: mode, prefixes, map escape and tail in hex
    // ("-" for none), then 256 results by opcode: the length in hex as objdump
    // measures it (in 64-bit mode, as either its AMD64 or Intel64 syntax does), I
    // or U for Invalid or Unsupported, "." where objdump says "(bad)" (the
    // length of an #UD encoding does not matter) or splits off a prefix.
    // I and U where objdump decodes something: LOCK on a non-lockable opcode or
    // register operand, VEX/EVEX, MOV TR (gone since the Pentium), VIA PadLock.
    const OPCODE_TABLES: &str = "
64 - - 442408
444425II444425I4444425II444425II4444254I4444254I4444254I4444254I
................1111111111111111IIU44444582511112222222222222222
58I54444444444441111111111I1111199991111251111112222222255555555
5531UU58413112I14444III1444444442222222255I21111I144115811111144

64 - - 05
666625II666625I2666625II666625II6666256I6666256I6666256I6666256I
66666666666666661111111111111111IIU666465a2711112222222222222222
7aI76666666666661111111111I1111199991111251111112222222255555555
7731UU7a413112I16666III1666666662222222255I21111I166117a11111166

64 - - c0
222225II222225I3222225II222225II2222254I2222254I2222254I2222254I
44444444444444441111111111111111IIU24444562311112222222222222222
36I3222222222.221111111111I1111199991111251111112222222255555555
3331UU36413112I12222III1222222222222222255I21111I144113611111122

64 - 0f 442408
5555I22222I2I52.55555555555555553333IIII55555555222222I2.I.IIIII
5555555555555555.555555555555555555555555555..556...555255II..55
66666666666666665555555555555555222565II2225655555555555.5.55555
55656.6.22222222.55555..55555555555555.555555555.555555.55555555

64 - 0f 05
7777I22222I2I72.7777777777..77773333IIII77777777222222I24I.IIIII
7777777777777777.777777777777777777777777777..778...777277II..77
66666666666666667777777777777777222787II2227877777777777.7.77777
77878.8.22222222.77777..77777777777777.777777777.777777.77777777

64 - 0f c0
3333I22222I2I.2.333.333.333333333333IIII333.3333222222I2.I.IIIII
33333333333333333333333333333333333333333333..334...333233II..33
66666666666666663333333333333333222343II222343.333.3..33.3.33333
334.444.22222222.33333.333333333333333..33333333.333333333333333

32 - - 442408
4444251144442514444425114444251144442521444425214444252144442521
1111111111111111111111111111111111442222582511112222222222222222
5855444444444444111111111171111155551111251111112222222255555555
5531445841311211444422I1444444442222222255721111I122115811111144

32 - - 05
6666251166662512666625116666251166662561666625616666256166662561
11111111111111111111111111111111116666465a2711112222222222222222
7a77666666666666111111111171111155551111251111112222222255555555
7731667a41311211666622I1666666662222222255721111I166117a11111166

32 - - c0
2222251122222513222225112222251122222541222225412222254122222541
1111111111111111111111111111111111U24444562311112222222222222222
3633222222222.22111111111171111155551111251111112222222255555555
3331UU3641311211222222I1222222222222222255721111I144113611111122

32 - 0f 442408
5555I22222I2I52.55555555555555553333IIII55555555222222I2.I.IIIII
5555555555555555.555555555555555555555555555..556...555255II..55
66666666666666665555555555555555222565II2225655555555555.5.55555
55656.6.22222222.55555..55555555555555.555555555.555555.55555555

32 - 0f 05
7777I22222I2I72.77777777777777773333IIII77777777222222I24I.IIIII
7777777777777777.777777777777777777777777777..778...777277II..77
66666666666666667777777777777777222787II2227877777777777.7.77777
77878.8.22222222.77777..77777777777777.777777777.777777.77777777

32 - 0f c0
3333I22222I2I.2.333.333.333333333333IIII333.3333222222I2.I.IIIII
33333333333333333333333333333333333333333333..334...333233II..33
66666666666666663333333333333333222343II222343.333.3..33.3.33333
334.444.22222222.33333.333333333333333..33333333.333333333333333

16 - - 4608
3333231133332313333323113333231133332321333323213333232133332321
1111111111111111111111111111111111332222352411112222222222222222
4544333333333333111111111151111133331111231111112222222233333333
4431334541311211333322I1333333332222222233521111I122114511111133

16 - - 06
4444231144442312444423114444231144442321444423214444232144442321
1111111111111111111111111111111111442222362511112222222222222222
5655444444444444111111111151111133331111231111112222222233333333
5531445641311211444422I1444444442222222233521111I122115611111144

16 - - c0
2222231122222313222223112222231122222341222223412222234122222341
1111111111111111111111111111111111U24444342311112222222222222222
3433222222222.22111111111151111133331111231111112222222233333333
3331UU3441311211222222I1222222222222222233521111I144113411111122

16 - 0f 4608
4444I22222I2I42.4444444444..44443333IIII44444444222222I2.I.IIIII
4444444444444444.444444444444444444444444444..445...444244II..44
44444444444444444444444444444444222454II2224544444444444.4.44444
44545.5.22222222.44444..44444444444444.444444444.444444.44444444

16 - 0f 06
5555I22222I2I52.5555555555..55553333IIII55555555222222I24I.IIIII
5555555555555555.555555555555555555555555555..556...555255II..55
44444444444444445555555555555555222565II2225655555555555.5.55555
55656.6.22222222.55555..55555555555555.555555555.555555.55555555

16 - 0f c0
3333I22222I2I.2.333.333.333333333333IIII333.3333222222I2.I.IIIII
33333333333333333333333333333333333333333333..334...333233II..33
44444444444444443333333333333333222343II222343.333.3..33.3.33333
334.444.22222222.33333.333333333333333..33333333.333333333333333

64 - 0f38 442408
666666666666................666.................................
................................................................
................................................................
........666666..................................66....6..6..6...

64 - 0f3a 442408
...............7................................................
................................................................
................................................................
............7...................................................

32 - 0f38 05
888888888888................888.................................
................................................................
................................................................
........888888..................................88....8..8..8...

32 - 0f3a 05
...............9................................................
................................................................
................................................................
............9...................................................

64 66 - 05
777734II777734I3777734II777734II7777345I7777345I7777345I7777345I
55555555777777772222222222222222IIU75555493822223333333333333333
89I87777777777772222222222I22222aaaa2222342222223333333344444444
8842UU89524223I27777III2777777773333333366I32222I255228922222277

64 66 0f 05
8888I3333.I3I83.88888888888888884444IIII88888888333333I35I.IIIII
8888888888888888.8..88888888888888888888888888889...888...II8888
77777777777777778888888888888888333898II3338988888888888.8.88888
889.9.9.333333338888888.888888888888888888888888.888888.88888888

64 67 - 05
777736II777736I3777736II777736II7777367I7777367I7777367I7777367I
77777777777777772222222222222222IIU777576b3822223333333333333333
8bI87777777777772222222222I2222266662222362222223333333366666666
8842UU8b524223I27777III2777777773333333366I32222I277228b22222277

64 67 0f 05
8888I33333I3I83.8888888888..88884444IIII88888888333333I35I.IIIII
8888888888888888.888888888888888888888888888..889...888388II..88
77777777777777778888888888888888333898II3338988888888888.8.88888
88989.9.33333333.88888..88888888888888.888888888.888888.88888888

64 48 - 05
777736II777736I3777736II777736II777736.I777736.I777736.I777736.I
................2222222222222222IIU7....6b3822223333333333333333
8bI87777777777772222222222I.2222aaaa22223622222233333333aaaaaaaa
8842UU8b524223I27777III2777777773333333366I32222.2..228b22222277

64 48 0f 05
8888I33333I3I83.8888888888..88884444IIII88888888333333I35I.IIIII
8888888888888888.888888888888888888888888888..889...888388II..88
77777777777777778888888888888888333898II3338988888888888.8.88888
88989.9.33333333.88888..88888888888888.888888888.888888.88888888

64 f2 - 05
777736II777736I3777736II777736II7777367I7777367I7777367I7777367I
77777777777777772222222222222222IIU777576b3822223333333333333333
8bI87777777777772222222222I22222aaaa2222362222223333333366666666
8842UU8b524223I27777III2777777773333333366I32222I277228b22222277

64 f2 0f 05
8888I3333.I3I83.888.....888888884444IIII..8888..333333I3.I.IIIII
8888888888888888.8......888.8888................9.........II88..
77777777777777778888888888888888333898II3338988888888888.8.8..88
889.....333333338.....................8.........8..............8

64 f3 - 05
777736II777736I3777736II777736II7777367I7777367I7777367I7777367I
77777777777777772222222222222222IIU777576b3822223333333333333333
8bI87777777777772222222222I22222aaaa2222362222223333333366666666
8842UU8b524223I27777III2777777773333333366I32222I277228b22222277

64 f3 0f 05
8888I33333I3I83.888...8.888.88884444IIII..8888..333333I3.I.IIIII
8888888888888888.888....88888888...............89.........II..88
77777777777777778888888888888888333898II333898888888888888.88888
889.....33333333......................8........................8

32 66 - 05
7777342277773423777734227777342277773452777734527777345277773452
2222222222222222222222222222222222775555493822223333333333333333
8988777777777777222222222262222266662222342222223333333344444444
8842778952422322777733I2777777773333333344632222I255228922222277

16 66 - 4608
4444362244443624444436224444362244443632444436324444363244443632
2222222222222222222222222222222222443333683522223333333333333333
5855444444444444222222222282222244442222362222223333333366666666
5542445852422322444433I2444444443333333366832222I233225822222244

32 67 - 05
3333362233333623333336223333362233333672333336723333367233333672
2222222222222222222222222222222222337757673422223333333333333333
4744333333333333222222222282222244442222362222223333333366666666
4442334752422322333333I2333333333333333366832222I277224722222233

16 67 - 4608
4444342244443424444434224444342244443432444434324444343244443432
2222222222222222222222222222222222443333463522223333333333333333
5655444444444444222222222262222266662222342222223333333344444444
5542445652422322444433I2444444443333333344632222I233225622222244

";

    #[test]
    fn opcode_tables() {
        let mut checked = 0;
        for block in OPCODE_TABLES.split("\n\n").filter(|b| !b.trim().is_empty()) {
            let mut lines = block.trim().lines();
            let head: Vec<&str> = lines.next().unwrap().split(' ').collect();
            let mode = match head[0] {
                "64" => L64,
                "32" => P32,
                _ => P16,
            };
            let part = |s: &str| if s == "-" { Vec::new() } else { hex(s) };
            let (prefix, map, tail) = (part(head[1]), part(head[2]), part(head[3]));
            let lens: Vec<char> = lines.flat_map(str::chars).collect();
            assert_eq!(lens.len(), 256);
            for (op, &want) in lens.iter().enumerate() {
                let mut bytes = prefix.clone();
                bytes.extend_from_slice(&map);
                bytes.push(op as u8);
                bytes.extend_from_slice(&tail);
                bytes.extend_from_slice(&hex("11 22 33 44 55 66 77 88 99 aa bb cc dd ee"));
                let got = insn_len(&bytes, mode);
                let expect = match want {
                    'I' => Err(DecodeError::Invalid),
                    'U' => Err(DecodeError::Unsupported),
                    '.' => continue,
                    c => Ok(c.to_digit(16).unwrap() as usize),
                };
                assert_eq!(got, expect, "{bytes:02x?} in {mode:?}");
                checked += 1;
            }
        }
        assert!(checked > 7000);
    }

    #[test]
    fn from_state() {
        let f = ExecMode::from_state;
        assert_eq!(f(false, false, false, false, false), REAL);
        // CR0.PE clear wins over a stale CS.L; a 32-bit CS cache gives 32-bit sizes.
        assert_eq!(f(false, false, true, true, false), REAL);
        assert_eq!(f(false, false, false, false, true), P32);
        assert_eq!(f(true, true, false, false, false), REAL);
        assert_eq!(f(true, false, false, false, false), P16);
        assert_eq!(f(true, false, false, false, true), P32);
        assert_eq!(f(true, false, true, true, false), L64);
        // Compatibility mode follows CS.D; CS.L without EFER.LMA means nothing.
        assert_eq!(f(true, false, true, false, true), P32);
        assert_eq!(f(true, false, true, false, false), P16);
        assert_eq!(f(true, false, false, true, true), P32);
    }

    fn len(s: &str, mode: ExecMode) -> Result<usize, DecodeError> {
        insn_len(&hex(s), mode)
    }

    #[test]
    fn odd_immediates() {
        // F6/F7: TEST /0 and /1 take an immediate, NOT/NEG/MUL/... do not.
        assert_eq!(len("f6 00 11", L64), Ok(3));
        assert_eq!(len("f6 08 11", L64), Ok(3));
        assert_eq!(len("f6 10", L64), Ok(2));
        assert_eq!(len("f7 00 11 22 33 44", L64), Ok(6));
        assert_eq!(len("66 f7 00 11 22", L64), Ok(5));
        assert_eq!(len("48 f7 00 11 22 33 44", L64), Ok(7));
        assert_eq!(len("f7 38", L64), Ok(2));
        assert_eq!(len("f7 00 11 22", P16), Ok(4));
        assert_eq!(len("66 f7 00 11 22 33 44", P16), Ok(7));
        // ENTER iw, ib whatever the operand size.
        for m in [L64, P32, P16] {
            assert_eq!(len("c8 10 00 01", m), Ok(4));
            assert_eq!(len("66 c8 10 00 01", m), Ok(5));
        }
        // Far pointers: offset of the operand size, then a selector; #UD in 64-bit.
        assert_eq!(len("9a 78 56 34 12 10 00", P32), Ok(7));
        assert_eq!(len("66 ea 34 12 10 00", P32), Ok(6));
        assert_eq!(len("ea 34 12 10 00", REAL), Ok(5));
        assert_eq!(len("66 ea 78 56 34 12 10 00", REAL), Ok(8));
        assert_eq!(len("9a 78 56 34 12 10 00", L64), Err(DecodeError::Invalid));
        assert_eq!(len("ea 78 56 34 12 10 00", L64), Err(DecodeError::Invalid));
        // moffs follows the address size, not the operand size.
        assert_eq!(len("a1 11 22 33 44 55 66 77 88", L64), Ok(9));
        assert_eq!(len("66 a1 11 22 33 44 55 66 77 88", L64), Ok(10));
        assert_eq!(len("67 a1 11 22 33 44", L64), Ok(6));
        assert_eq!(len("a0 11 22 33 44", P32), Ok(5));
        assert_eq!(len("67 a3 11 22", P32), Ok(4));
        assert_eq!(len("a2 11 22", P16), Ok(3));
        assert_eq!(len("67 a2 11 22 33 44", REAL), Ok(6));
        // B8+r: imm64 only with REX.W, which beats 66.
        assert_eq!(len("b8 11 22 33 44", L64), Ok(5));
        assert_eq!(len("66 b8 11 22", L64), Ok(4));
        assert_eq!(len("48 b8 11 22 33 44 55 66 77 88", L64), Ok(10));
        assert_eq!(len("66 48 b8 11 22 33 44 55 66 77 88", L64), Ok(11));
        assert_eq!(len("49 bf 11 22 33 44 55 66 77 88", L64), Ok(10));
        // A REX that is not last is ignored (but still part of the instruction).
        assert_eq!(len("48 66 b8 11 22", L64), Ok(5));
        // E8/E9: rel32 in 64-bit mode even after 66; rel16 with 66 elsewhere.
        assert_eq!(len("e8 11 22 33 44", L64), Ok(5));
        assert_eq!(len("66 e8 11 22 33 44", L64), Ok(6));
        assert_eq!(len("66 e9 11 22 33 44", L64), Ok(6));
        assert_eq!(len("66 0f 84 11 22 33 44", L64), Ok(7));
        assert_eq!(len("66 e8 11 22", P32), Ok(4));
        assert_eq!(len("e9 11 22", P16), Ok(3));
        assert_eq!(len("66 e9 11 22 33 44", REAL), Ok(6));
        // XBEGIN is rel16 with 66 in every mode.
        assert_eq!(len("66 c7 f8 11 22", L64), Ok(5));
        // 3DNow!: ModRM, displacement, then the opcode byte.
        assert_eq!(len("0f 0f c1 9e", L64), Ok(4));
        assert_eq!(len("0f 0f 44 24 08 9e", L64), Ok(6));
        assert_eq!(len("0f 0f 05 11 22 33 44 9e", L64), Ok(8));
        assert_eq!(len("0f 0f 06 11 22 9e", P16), Ok(6));
        // SSE4a: EXTRQ/INSERTQ immediates; plain 0F 78 is VMREAD.
        assert_eq!(len("66 0f 78 c0 01 02", L64), Ok(6));
        assert_eq!(len("f2 0f 78 c1 01 02", L64), Ok(6));
        assert_eq!(len("66 f2 0f 78 c1 01 02", L64), Ok(7));
        assert_eq!(len("0f 78 c1", L64), Ok(3));
        assert_eq!(len("66 0f 79 c1", L64), Ok(4));
        // 0F 38 never has an immediate, 0F 3A always one byte.
        assert_eq!(len("66 0f 38 00 c1", L64), Ok(5));
        assert_eq!(len("66 0f 3a 0f c1 03", L64), Ok(6));
        assert_eq!(len("66 0f 3a 0f 84 24 11 22 33 44 03", P32), Ok(11));
    }

    #[test]
    fn addressing_forms() {
        // 64-bit: SIB, SIB with no base, RIP-relative, REX.B r13 still needs disp.
        assert_eq!(len("8b 04 24", L64), Ok(3));
        assert_eq!(len("8b 04 25 11 22 33 44", L64), Ok(7));
        assert_eq!(len("8b 05 11 22 33 44", L64), Ok(6));
        assert_eq!(len("41 8b 45 00", L64), Ok(4));
        assert_eq!(len("41 8b 04 24", L64), Ok(4));
        assert_eq!(len("8b 84 24 11 22 33 44", L64), Ok(7));
        assert_eq!(len("67 8b 05 11 22 33 44", L64), Ok(7));
        // 67 in 32-bit mode selects 16-bit forms: no SIB, disp16.
        assert_eq!(len("67 8b 06 11 22", P32), Ok(5));
        assert_eq!(len("67 8b 04", P32), Ok(3));
        assert_eq!(len("67 8b 84 11 22", P32), Ok(5));
        assert_eq!(len("8b 06 11 22", REAL), Ok(4));
        assert_eq!(len("67 8b 04 24", REAL), Ok(4));
        assert_eq!(len("67 8b 05 11 22 33 44", P16), Ok(7));
        // MOV CR/DR: mod is ignored, so rm 4 and rm 5 bring nothing more.
        assert_eq!(len("0f 20 04", L64), Ok(3));
        assert_eq!(len("0f 22 05", P32), Ok(3));
        assert_eq!(len("0f 23 84", P16), Ok(3));
        // But MOV to a segment register has a normal memory operand.
        assert_eq!(len("8e 04 24", L64), Ok(3));
    }

    #[test]
    fn prefixes() {
        let p = |s: &str, m| decode_insn(&hex(s), m).unwrap().prefixes;
        // In 64-bit mode, CS/DS/ES/SS are null prefixes: FS stays.
        assert_eq!(p("64 3e 8b 00", L64).seg, Some(Seg::Fs));
        assert_eq!(p("3e 8b 00", L64).seg, None);
        assert_eq!(p("2e 65 8b 00", L64).seg, Some(Seg::Gs));
        // Elsewhere the last one given counts.
        assert_eq!(p("64 3e 8b 00", P32).seg, Some(Seg::Ds));
        assert_eq!(p("26 8b 00", P16).seg, Some(Seg::Es));
        assert_eq!(p("36 2e 8b 00", REAL).seg, Some(Seg::Cs));
        assert_eq!(p("f2 f3 a4", L64).rep, Some(Rep::Rep));
        assert_eq!(p("f3 f2 a4", L64).rep, Some(Rep::Repne));
        // REX: only last, only 64-bit; a later REX replaces an earlier one.
        let q = p("48 41 8b 00", L64);
        assert_eq!((q.rex, q.op_size), (Some(0x41), 4));
        let q = p("41 48 8b 00", L64);
        assert_eq!((q.rex, q.op_size), (Some(0x48), 8));
        let q = p("48 66 8b 00", L64);
        assert_eq!((q.rex, q.op_size), (None, 2));
        let q = p("66 48 8b 00", L64);
        assert_eq!((q.rex, q.op_size, q.opsize_override), (Some(0x48), 8, true));
        assert_eq!(p("67 8b 00", L64).addr_size, 4);
        assert_eq!(p("67 67 8b 00", P32).addr_size, 2);
        assert_eq!(p("66 8b 00", REAL).op_size, 4);
        // Outside 64-bit mode 40-4F are INC/DEC.
        assert_eq!(len("48 8b 00", P32), Ok(1));
        assert_eq!(len("41", P16), Ok(1));
        // Repeated prefixes are fine up to 15 bytes.
        assert_eq!(
            len("66 66 66 66 66 66 66 66 66 66 66 66 66 0f a2", L64),
            Ok(15)
        );
        assert_eq!(
            len("2e 3e 26 36 64 65 f0 f2 f3 67 66 f3 48 ff 00", L64),
            Ok(15)
        );
    }

    #[test]
    fn limits() {
        let mut v = [0x66u8; 16];
        assert_eq!(insn_len(&v, L64), Err(DecodeError::TooLong));
        assert_eq!(insn_len(&v[..10], L64), Err(DecodeError::Truncated));
        assert_eq!(insn_len(&v[..0], L64), Err(DecodeError::Truncated));
        // 14 prefixes and an opcode needing an immediate: too long however
        // few bytes were fetched.
        v[14] = 0x05;
        assert_eq!(insn_len(&v[..15], L64), Err(DecodeError::TooLong));
        v[13] = 0x90;
        assert_eq!(insn_len(&v[..14], L64), Ok(14));
        // 11 prefixes + MOV RAX, imm64 would be 21 bytes.
        assert_eq!(
            len("66 66 66 66 66 66 66 66 66 66 66 48 b8", L64),
            Err(DecodeError::TooLong)
        );
        // 14 prefixes + a 1-byte instruction: exactly 15.
        assert_eq!(
            len("f3 f3 f3 f3 f3 f3 f3 f3 f3 f3 f3 f3 f3 f3 90", P32),
            Ok(15)
        );
        assert_eq!(
            len("f3 f3 f3 f3 f3 f3 f3 f3 f3 f3 f3 f3 f3 f3 f3 90", P32),
            Err(DecodeError::TooLong)
        );
        // A 15-byte instruction with extra bytes after it.
        assert_eq!(
            len("66 67 f0 48 81 84 24 11 22 33 44 55 66 77 88 90 90", L64),
            Ok(15)
        );
        assert_eq!(
            len("66 66 67 f0 48 81 84 24 11 22 33 44 55 66 77 88", L64),
            Err(DecodeError::TooLong)
        );
    }

    #[test]
    fn vex_evex_xop() {
        // VEX and EVEX: always in 64-bit mode, on a register ModRM elsewhere.
        assert_eq!(len("c5 f8 10 00", L64), Err(DecodeError::Unsupported));
        assert_eq!(len("c4 e2 79 18 00", L64), Err(DecodeError::Unsupported));
        assert_eq!(len("62 f1 7c 48 10 00", L64), Err(DecodeError::Unsupported));
        assert_eq!(len("c5", L64), Err(DecodeError::Unsupported));
        assert_eq!(len("c5 f8 10 00", P32), Err(DecodeError::Unsupported));
        assert_eq!(len("62 f1 7c 48 10 00", P32), Err(DecodeError::Unsupported));
        assert_eq!(len("c4 e2 79 18 00", P16), Err(DecodeError::Unsupported));
        assert_eq!(len("c5", P32), Err(DecodeError::Truncated));
        // LES, LDS and BOUND with a memory operand.
        assert_eq!(len("c4 00", P32), Ok(2));
        assert_eq!(len("c5 44 24 08", P32), Ok(4));
        assert_eq!(len("62 05 11 22 33 44", P32), Ok(6));
        assert_eq!(len("c5 46 08", REAL), Ok(3));
        // XOP (AMD): 8F with a nonzero reg field; 8F /0 is POP.
        assert_eq!(len("8f e9 78 c1 c0", L64), Err(DecodeError::Unsupported));
        assert_eq!(len("8f 00", L64), Ok(2));
        assert_eq!(len("8f 44 24 08", P32), Ok(4));
    }

    #[test]
    fn invalid() {
        let inv = Err(DecodeError::Invalid);
        // LOCK: only on lockable read-modify-write memory destinations.
        assert_eq!(len("f0 01 00", L64), Ok(3));
        assert_eq!(len("f0 01 c0", L64), inv);
        assert_eq!(len("f0 89 00", L64), inv);
        assert_eq!(len("f0 39 00", L64), inv);
        assert_eq!(len("f0 83 38 01", L64), inv);
        assert_eq!(len("f0 83 30 01", L64), Ok(4));
        assert_eq!(len("f0 f6 00 01", L64), inv);
        assert_eq!(len("f0 f6 18", L64), Ok(3));
        assert_eq!(len("f0 0f ba 20 01", L64), inv);
        assert_eq!(len("f0 0f ba 28 01", L64), Ok(5));
        assert_eq!(len("f0 0f c7 08", L64), Ok(4));
        assert_eq!(len("f0 48 0f c7 08", L64), Ok(5));
        assert_eq!(len("f0 0f c7 30", L64), inv);
        assert_eq!(len("f0 87 00", P32), Ok(3));
        assert_eq!(len("f0 90", P32), inv);
        assert_eq!(len("f0 0f a2", P32), inv);
        // AMD's LOCK MOV CR0 = MOV CR8 (AltMovCr8).
        assert_eq!(len("f0 0f 20 c0", P32), Ok(4));
        assert_eq!(len("f0 0f 22 c0", P32), Ok(4));
        // Invalid in 64-bit mode only.
        for op in [
            "06", "07", "0e", "16", "17", "1e", "1f", "27", "2f", "37", "3f", "60", "61", "ce",
        ] {
            assert_eq!(len(op, L64), inv, "{op}");
            assert_eq!(len(op, P32), Ok(1), "{op}");
        }
        assert_eq!(len("82 c0 01", L64), inv);
        assert_eq!(len("82 c0 01", P32), Ok(3));
        assert_eq!(len("d4 0a", L64), inv);
        assert_eq!(len("d5 0a", P16), Ok(2));
        // Undefined everywhere.
        for s in [
            "d6", "0f 04", "0f 0a", "0f 0c", "0f 24 c0", "0f 36", "0f 39", "0f a6 c0", "0f 7a",
        ] {
            assert_eq!(len(s, L64), inv, "{s}");
            assert_eq!(len(s, P16), inv, "{s}");
        }
        // Group encodings with no instruction.
        assert_eq!(len("c6 08 01", L64), inv);
        assert_eq!(len("c7 c8 01 02 03 04", L64), inv);
        assert_eq!(len("c6 f8 01", L64), Ok(3));
        assert_eq!(len("fe 10", L64), inv);
        assert_eq!(len("ff 38", L64), inv);
        assert_eq!(len("ff d8", L64), inv);
        assert_eq!(len("ff e8", P32), inv);
        assert_eq!(len("ff 18", P32), Ok(2));
    }

    #[test]
    fn identity() {
        let d = |s: &str, m| decode_insn(&hex(s), m).unwrap();
        let i = d("2e 0f a2", P32);
        assert_eq!(
            (i.map, i.opcode, i.modrm, i.len),
            (OpcodeMap::Map0F, 0xa2, None, 3)
        );
        let i = d("0f 01 d9", L64);
        assert_eq!(
            (i.map, i.opcode, i.modrm, i.len),
            (OpcodeMap::Map0F, 0x01, Some(0xd9), 3)
        );
        let i = d("66 0f 3a 0f c1 03", L64);
        assert_eq!(
            (i.map, i.opcode, i.imm, i.imm_len),
            (OpcodeMap::Map0F3A, 0x0f, 3, 1)
        );
        let i = d("66 0f 38 00 c1", L64);
        assert_eq!((i.map, i.opcode), (OpcodeMap::Map0F38, 0x00));
        let i = d("0f 0f c1 9e", L64);
        assert_eq!((i.map, i.opcode, i.imm), (OpcodeMap::Map0F, 0x0f, 0x9e));
        let i = d("e6 80", P16);
        assert_eq!(
            (i.map, i.opcode, i.imm, i.imm_len),
            (OpcodeMap::Primary, 0xe6, 0x80, 1)
        );
        let i = d("48 b8 88 77 66 55 44 33 22 11", L64);
        assert_eq!(i.imm, 0x1122_3344_5566_7788);
        let i = d("44 0f 20 c0", L64);
        assert_eq!(i.modrm_reg(), Some(8));
        assert!(!i.has_mem_operand());
        assert_eq!(d("8b 45 08", P32).modrm_segment(), Seg::Ss);
        assert_eq!(d("8b 44 24 08", P32).modrm_segment(), Seg::Ss);
        assert_eq!(d("8b 04 25 00 10 00 00", L64).modrm_segment(), Seg::Ds);
        assert_eq!(d("8b 05 00 10 00 00", P32).modrm_segment(), Seg::Ds);
        assert_eq!(d("8b 45 00", L64).modrm_segment(), Seg::Ss);
        assert_eq!(d("41 8b 45 00", L64).modrm_segment(), Seg::Ds);
        assert_eq!(d("8b 02", P16).modrm_segment(), Seg::Ss);
        assert_eq!(d("8b 06 00 10", P16).modrm_segment(), Seg::Ds);
        assert_eq!(d("8b 46 00", P16).modrm_segment(), Seg::Ss);
        assert_eq!(d("26 8b 46 00", P16).modrm_segment(), Seg::Es);
    }

    fn gpr(n: u8) -> Gpr {
        Gpr::new(n).unwrap()
    }

    fn ld(size: u8, reg: u8, width: u8, high_byte: bool, ext: Extend) -> MmioOp {
        load(size, gpr(reg), width, high_byte, ext)
    }

    fn st(size: u8, reg: u8, high_byte: bool) -> MmioOp {
        store(size, (gpr(reg), high_byte))
    }

    fn imm(size: u8, v: u64) -> MmioOp {
        MmioOp::Store {
            size,
            src: Src::Imm(v),
        }
    }

    fn mmio(s: &str, mode: ExecMode) -> MmioInsn {
        let bytes = hex(s);
        let insn = decode_mmio(&padded(&bytes, 0xcc), mode).unwrap();
        assert_eq!(insn.len, bytes.len(), "{s}");
        assert_eq!(decode_mmio(&bytes, mode), Ok(insn));
        insn
    }

    #[test]
    fn mmio_forms_64() {
        use super::Extend::{None as Plain, Sign, Zero};
        let cases = [
            // MOV r/m, r: operand size from 66 / REX.W (which wins), REX.R.
            ("89 00", st(4, 0, false)),
            ("48 89 08", st(8, 1, false)),
            ("66 89 10", st(2, 2, false)),
            ("66 48 89 10", st(8, 2, false)),
            ("44 89 00", st(4, 8, false)),
            ("4c 89 7c 24 08", st(8, 15, false)),
            ("89 05 11 22 33 44", st(4, 0, false)),
            // 8-bit: AH..BH without REX, SPL..DIL with any REX.
            ("88 20", st(1, 0, true)),
            ("88 38", st(1, 3, true)),
            ("40 88 20", st(1, 4, false)),
            ("40 88 38", st(1, 7, false)),
            ("44 88 38", st(1, 15, false)),
            ("88 18", st(1, 3, false)),
            // MOV r, r/m.
            ("8a 38", ld(1, 3, 1, true, Plain)),
            ("8a 00", ld(1, 0, 1, false, Plain)),
            ("40 8a 30", ld(1, 6, 1, false, Plain)),
            ("8b 00", ld(4, 0, 4, false, Plain)),
            ("48 8b 00", ld(8, 0, 8, false, Plain)),
            ("66 8b 00", ld(2, 0, 2, false, Plain)),
            ("4c 8b 58 08", ld(8, 11, 8, false, Plain)),
            ("67 8b 18", ld(4, 3, 4, false, Plain)),
            // moffs.
            ("a0 88 77 66 55 44 33 22 11", ld(1, 0, 1, false, Plain)),
            ("a1 88 77 66 55 44 33 22 11", ld(4, 0, 4, false, Plain)),
            ("48 a1 88 77 66 55 44 33 22 11", ld(8, 0, 8, false, Plain)),
            ("66 a1 88 77 66 55 44 33 22 11", ld(2, 0, 2, false, Plain)),
            ("67 a1 44 33 22 11", ld(4, 0, 4, false, Plain)),
            ("a2 88 77 66 55 44 33 22 11", st(1, 0, false)),
            ("48 a3 88 77 66 55 44 33 22 11", st(8, 0, false)),
            ("67 66 a3 44 33 22 11", st(2, 0, false)),
            // MOVZX / MOVSX / MOVSXD.
            ("0f b6 00", ld(1, 0, 4, false, Zero)),
            ("66 0f b6 00", ld(1, 0, 2, false, Zero)),
            ("48 0f b6 00", ld(1, 0, 8, false, Zero)),
            ("0f b7 00", ld(2, 0, 4, false, Zero)),
            ("4c 0f b7 08", ld(2, 9, 8, false, Zero)),
            ("0f be 00", ld(1, 0, 4, false, Sign)),
            ("66 0f be 00", ld(1, 0, 2, false, Sign)),
            ("48 0f be 00", ld(1, 0, 8, false, Sign)),
            ("0f bf 00", ld(2, 0, 4, false, Sign)),
            ("48 0f bf 08", ld(2, 1, 8, false, Sign)),
            ("48 63 00", ld(4, 0, 8, false, Sign)),
            ("4c 63 54 24 08", ld(4, 10, 8, false, Sign)),
            // MOV r/m, imm: imm32 sign-extended to 64 bits.
            ("c6 00 81", imm(1, 0xffff_ffff_ffff_ff81)),
            ("c6 05 11 22 33 44 7f", imm(1, 0x7f)),
            ("66 c7 00 34 12", imm(2, 0x1234)),
            ("c7 00 78 56 34 12", imm(4, 0x1234_5678)),
            ("48 c7 00 ff ff ff ff", imm(8, u64::MAX)),
            ("48 c7 40 08 ff ff ff 7f", imm(8, 0x7fff_ffff)),
            ("48 c7 00 00 00 00 80", imm(8, 0xffff_ffff_8000_0000)),
            ("66 48 c7 00 00 00 00 80", imm(8, 0xffff_ffff_8000_0000)),
            // MOVNTI.
            ("0f c3 00", st(4, 0, false)),
            ("48 0f c3 00", st(8, 0, false)),
            ("4c 0f c3 05 10 00 00 00", st(8, 8, false)),
            // STOS / LODS.
            ("aa", st(1, 0, false)),
            ("ab", st(4, 0, false)),
            ("66 ab", st(2, 0, false)),
            ("48 ab", st(8, 0, false)),
            ("ac", ld(1, 0, 1, false, Plain)),
            ("ad", ld(4, 0, 4, false, Plain)),
            ("66 ad", ld(2, 0, 2, false, Plain)),
            ("48 ad", ld(8, 0, 8, false, Plain)),
        ];
        for (s, op) in cases {
            assert_eq!(mmio(s, L64).op, op, "{s}");
        }
    }

    #[test]
    fn mmio_forms_legacy() {
        use super::Extend::{None as Plain, Sign, Zero};
        let cases = [
            ("89 00", P32, st(4, 0, false)),
            ("66 89 00", P32, st(2, 0, false)),
            ("88 24 24", P32, st(1, 0, true)),
            ("8b 05 11 22 33 44", P32, ld(4, 0, 4, false, Plain)),
            ("67 8b 07", P32, ld(4, 0, 4, false, Plain)),
            ("a1 44 33 22 11", P32, ld(4, 0, 4, false, Plain)),
            ("67 a1 22 11", P32, ld(4, 0, 4, false, Plain)),
            ("66 a3 44 33 22 11", P32, st(2, 0, false)),
            ("0f b7 00", P32, ld(2, 0, 4, false, Zero)),
            ("c7 00 78 56 34 12", P32, imm(4, 0x1234_5678)),
            ("0f c3 00", P32, st(4, 0, false)),
            ("ab", P32, st(4, 0, false)),
            ("89 07", P16, st(2, 0, false)),
            ("66 89 07", P16, st(4, 0, false)),
            ("8a 66 08", P16, ld(1, 0, 1, true, Plain)),
            ("8b 46 08", REAL, ld(2, 0, 2, false, Plain)),
            ("67 8b 04 24", REAL, ld(2, 0, 2, false, Plain)),
            ("a1 22 11", REAL, ld(2, 0, 2, false, Plain)),
            ("67 a0 44 33 22 11", REAL, ld(1, 0, 1, false, Plain)),
            ("66 0f be 07", REAL, ld(1, 0, 4, false, Sign)),
            ("c7 07 34 12", REAL, imm(2, 0x1234)),
            ("66 c7 07 78 56 34 12", REAL, imm(4, 0x1234_5678)),
            ("66 ad", REAL, ld(4, 0, 4, false, Plain)),
        ];
        for (s, mode, op) in cases {
            assert_eq!(mmio(s, mode).op, op, "{s} {mode:?}");
        }
    }

    #[test]
    fn mmio_segments_and_strings() {
        let m = mmio("89 00", L64);
        assert_eq!(
            (m.seg, m.addr_size, m.string, m.rep),
            (Seg::Ds, 8, false, false)
        );
        assert_eq!(mmio("89 04 24", L64).seg, Seg::Ss);
        assert_eq!(mmio("3e 89 04 24", L64).seg, Seg::Ss);
        assert_eq!(mmio("3e 89 04 24", P32).seg, Seg::Ds);
        assert_eq!(mmio("64 89 00", L64).seg, Seg::Fs);
        assert_eq!(mmio("65 48 a1 00 00 00 00 00 00 00 00", L64).seg, Seg::Gs);
        assert_eq!(mmio("a1 00 10 00 00", P32).seg, Seg::Ds);
        assert_eq!(mmio("26 a1 00 10", REAL).seg, Seg::Es);
        assert_eq!(mmio("8b 46 08", REAL).seg, Seg::Ss);
        // STOS always writes ES:rDI; LODS reads DS:rSI unless overridden.
        let m = mmio("64 aa", L64);
        assert_eq!((m.seg, m.string, m.rep), (Seg::Es, true, false));
        let m = mmio("2e ac", P32);
        assert_eq!(
            (m.seg, m.string, m.rep, m.addr_size),
            (Seg::Cs, true, false, 4)
        );
        let m = mmio("f3 48 ab", L64);
        assert_eq!((m.string, m.rep, m.addr_size), (true, true, 8));
        let m = mmio("f2 67 ac", L64);
        assert_eq!((m.string, m.rep, m.addr_size), (true, true, 4));
        assert_eq!(mmio("f3 ad", REAL).addr_size, 2);
        // REP/XRELEASE on MOV is no repeat.
        let m = mmio("f3 89 00", L64);
        assert_eq!((m.string, m.rep), (false, false));
    }

    #[test]
    fn mmio_rejects() {
        let uns = Err(DecodeError::Unsupported);
        let m = |s: &str, mode| decode_mmio(&hex(s), mode);
        // Register-only forms never reach memory.
        for s in [
            "89 c0",
            "8a c4",
            "8b c0",
            "0f b6 c0",
            "48 63 c0",
            "c6 c0 01",
            "c7 c0 01 02 03 04",
        ] {
            assert_eq!(m(s, L64), uns, "{s}");
        }
        // Other instructions, VEX, XBEGIN, MOVS, ARPL, MOVSXD without REX.W.
        for s in [
            "01 00",
            "0f b0 08",
            "87 00",
            "a4",
            "a5",
            "0f 0f 00 9e",
            "c5 f8 10 00",
            "c7 f8 00 00 00 00",
            "63 00",
            "66 63 00",
            "ff 30",
            "8f 00",
            "0f 11 00",
            "f6 00 01",
            "0f a2",
            "e6 80",
        ] {
            assert_eq!(m(s, L64), uns, "{s}");
        }
        assert_eq!(m("63 00", P32), uns);
        assert_eq!(m("48 63 00", P32), uns);
        // LOCK MOV and prefixed MOVNTI are #UD.
        assert_eq!(m("f0 89 00", L64), Err(DecodeError::Invalid));
        assert_eq!(m("66 0f c3 00", L64), Err(DecodeError::Invalid));
        assert_eq!(m("f3 0f c3 00", L64), Err(DecodeError::Invalid));
        // Truncated fetches stay truncated.
        assert_eq!(m("48 8b", L64), Err(DecodeError::Truncated));
        assert_eq!(m("c7 00 78 56", L64), Err(DecodeError::Truncated));
        assert_eq!(m("a1 00 00 00 00", L64), Err(DecodeError::Truncated));
        assert_eq!(m("", L64), Err(DecodeError::Truncated));
    }

    /// A register file with a distinct, recognisable value in every register.
    fn regs() -> [u64; 16] {
        // R15 wraps to 0x1111_1111_1111_1110.
        core::array::from_fn(|i| 0x1111_1111_1111_1111u64.wrapping_mul(i as u64 + 1))
    }

    /// Loads `value` with the instruction `s` and returns the registers.
    fn after_load(s: &str, mode: ExecMode, value: u64) -> [u64; 16] {
        let mut r = regs();
        complete_load(&mut r, &mmio(s, mode).op, value);
        r
    }

    #[test]
    fn load_effects() {
        let r0 = regs();
        let cases: [(&str, u64, usize, u64); 18] = [
            // 8-bit: only the byte changes; AH..BH are bits 8..15.
            ("8a 00", 0xab, 0, 0x1111_1111_1111_11ab),
            ("8a 38", 0xab, 3, 0x4444_4444_4444_ab44),
            ("40 8a 38", 0xab, 7, 0x8888_8888_8888_88ab),
            ("44 8a 00", 0xab, 8, 0x9999_9999_9999_99ab),
            // 16-bit keeps bits 16..63, 32-bit zeroes them.
            ("66 8b 08", 0xbeef, 1, 0x2222_2222_2222_beef),
            ("8b 08", 0xdead_beef, 1, 0x0000_0000_dead_beef),
            ("48 8b 08", 0x0123_4567_89ab_cdef, 1, 0x0123_4567_89ab_cdef),
            // Zero extension.
            ("0f b6 08", 0x80, 1, 0x80),
            ("66 0f b6 08", 0x80, 1, 0x2222_2222_2222_0080),
            ("48 0f b7 08", 0x8000, 1, 0x8000),
            // Sign extension to the destination width only.
            ("0f be 08", 0x80, 1, 0x0000_0000_ffff_ff80),
            ("66 0f be 08", 0x80, 1, 0x2222_2222_2222_ff80),
            ("48 0f be 08", 0x80, 1, 0xffff_ffff_ffff_ff80),
            ("0f bf 08", 0x8001, 1, 0x0000_0000_ffff_8001),
            ("48 0f bf 08", 0x7fff, 1, 0x7fff),
            ("48 63 08", 0x8000_0000, 1, 0xffff_ffff_8000_0000),
            // Bytes above the access size are ignored.
            (
                "66 a1 00 00 00 00 00 00 00 00",
                0xffff_1234,
                0,
                0x1111_1111_1111_1234,
            ),
            ("ac", 0x1_22, 0, 0x1111_1111_1111_1122),
        ];
        for (s, value, reg, want) in cases {
            let r = after_load(s, L64, value);
            assert_eq!(r[reg], want, "{s}");
            // No other register changes.
            for i in (0..16).filter(|&i| i != reg) {
                assert_eq!(r[i], r0[i], "{s}: register {i}");
            }
        }
        // Legacy modes follow the same rules.
        assert_eq!(after_load("8b 00", P32, 0x1234_5678)[0], 0x1234_5678);
        assert_eq!(
            after_load("8b 00", REAL, 0x1234_5678)[0],
            0x1111_1111_1111_5678
        );
        assert_eq!(
            after_load("8a 26 00 10", REAL, 0x12)[0],
            0x1111_1111_1111_1211
        );
        // A store changes no register.
        let mut r = regs();
        complete_load(&mut r, &mmio("89 00", L64).op, 0x55);
        assert_eq!(r, r0);
    }

    #[test]
    fn store_values() {
        let r = regs();
        let v = |s: &str, mode| store_value(&r, &mmio(s, mode).op);
        assert_eq!(v("88 00", L64), 0x11);
        assert_eq!(v("88 20", L64), 0x11);
        assert_eq!(v("88 38", L64), 0x44);
        assert_eq!(v("40 88 38", L64), 0x88);
        assert_eq!(v("66 89 30", L64), 0x7777);
        assert_eq!(v("89 30", L64), 0x7777_7777);
        assert_eq!(v("48 89 30", L64), 0x7777_7777_7777_7777);
        assert_eq!(v("4c 89 38", L64), 0x1111_1111_1111_1110);
        assert_eq!(v("45 0f c3 38", L64), 0x1111_1110);
        assert_eq!(v("ab", L64), 0x1111_1111);
        assert_eq!(v("48 ab", L64), 0x1111_1111_1111_1111);
        assert_eq!(v("a2 00 00 00 00 00 00 00 00", L64), 0x11);
        assert_eq!(v("c6 00 81", L64), 0x81);
        assert_eq!(v("c7 00 00 00 00 80", L64), 0x8000_0000);
        assert_eq!(v("48 c7 00 00 00 00 80", L64), 0xffff_ffff_8000_0000);
        assert_eq!(v("66 c7 00 fe ff", L64), 0xfffe);
        assert_eq!(v("89 07", REAL), 0x1111);
        assert_eq!(v("66 89 07", REAL), 0x1111_1111);
        // A load stores nothing.
        assert_eq!(v("8b 00", L64), 0);
    }

    #[test]
    fn string_advance_rules() {
        let run = |s: &str, mode, df, rsi, rdi, rcx| {
            let insn = mmio(s, mode);
            let mut r = [0u64; 16];
            r[Gpr::RSI.index()] = rsi;
            r[Gpr::RDI.index()] = rdi;
            r[Gpr::RCX.index()] = rcx;
            let done = string_advance(&mut r, &insn, df);
            (done, r[6], r[7], r[1])
        };
        // STOS moves rDI, LODS rSI, by the access size, down with DF.
        assert_eq!(run("aa", L64, false, 0, 0x1000, 5), (true, 0, 0x1001, 5));
        assert_eq!(run("48 ab", L64, false, 0, 0x1000, 5), (true, 0, 0x1008, 5));
        assert_eq!(run("48 ab", L64, true, 0, 0x1000, 5), (true, 0, 0xff8, 5));
        assert_eq!(run("66 ad", L64, true, 0x1000, 0, 5), (true, 0xffe, 0, 5));
        assert_eq!(run("ad", L64, false, u64::MAX - 1, 0, 5), (true, 2, 0, 5));
        // The address size wraps: 32-bit updates zero bits 32..63, 16-bit
        // ones keep bits 16..63.
        assert_eq!(run("67 ab", L64, false, 0, 0xffff_fffe, 0), (true, 0, 2, 0));
        assert_eq!(
            run("67 ab", L64, false, 0, 0x1_0000_0000, 0),
            (true, 0, 4, 0)
        );
        assert_eq!(
            run("ab", REAL, false, 0, 0xabcd_ffff, 0),
            (true, 0, 0xabcd_0001, 0)
        );
        assert_eq!(run("ac", P16, true, 0x5_0000, 0, 0), (true, 0x5_ffff, 0, 0));
        assert_eq!(
            run("66 67 ab", REAL, true, 0, 2, 0),
            (true, 0, 0xffff_fffe, 0)
        );
        // REP: one iteration per access; done when rCX reaches 0.
        assert_eq!(
            run("f3 aa", L64, false, 0, 0x1000, 2),
            (false, 0, 0x1001, 1)
        );
        assert_eq!(run("f3 aa", L64, false, 0, 0x1000, 1), (true, 0, 0x1001, 0));
        assert_eq!(run("f2 ac", L64, false, 0x10, 0, 1), (true, 0x11, 0, 0));
        assert_eq!(
            run("f3 67 aa", L64, false, 0, 0, 0x1_0000_0001),
            (true, 0, 1, 0)
        );
        assert_eq!(
            run("f3 aa", REAL, false, 0, 0, 0x7_0001),
            (true, 0, 1, 0x7_0000)
        );
        assert_eq!(
            run("f3 aa", REAL, false, 0, 0, 0x7_0002),
            (false, 0, 1, 0x7_0001)
        );
        // Non-string instructions are complete and move nothing.
        assert_eq!(run("89 00", L64, true, 1, 2, 3), (true, 1, 2, 3));
    }

    /// xorshift64: deterministic pseudo-random bytes without external crates.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// Checks what must hold for any input: no panic, a length within the bytes
    /// and the limit, the same answer from the exact bytes, and MMIO decoding
    /// agreeing with the length decoder.
    fn check_any(bytes: &[u8], mode: ExecMode) {
        let got = insn_len(bytes, mode);
        let mmio = decode_mmio(bytes, mode);
        match got {
            Ok(n) => {
                assert!((1..=MAX_INSN_LEN).contains(&n) && n <= bytes.len());
                assert_eq!(insn_len(&bytes[..n], mode), Ok(n), "{bytes:02x?}");
                assert_eq!(insn_len(&bytes[..n - 1], mode), Err(DecodeError::Truncated));
                if let Ok(m) = mmio {
                    assert_eq!(m.len, n);
                    let mut r = [u64::MAX; 16];
                    complete_load(&mut r, &m.op, u64::MAX);
                    let _ = store_value(&r, &m.op);
                    let _ = string_advance(&mut r, &m, true);
                }
            }
            Err(e) => assert_eq!(mmio, Err(e), "{bytes:02x?}"),
        }
        if let Err(e) = mmio {
            if got.is_ok() {
                assert!(matches!(e, DecodeError::Unsupported | DecodeError::Invalid));
            }
        }
    }

    const MODES: [ExecMode; 4] = [L64, P32, P16, REAL];

    #[test]
    fn random_bytes() {
        let mut state = 0x2545_f491_4f6c_dd1d;
        for _ in 0..100_000 {
            let mut b = [0u8; 17];
            for x in b.iter_mut() {
                *x = next(&mut state) as u8;
            }
            // Bias towards prefixes and escapes, which random bytes rarely chain.
            let n = (next(&mut state) % 6) as usize;
            for x in b.iter_mut().take(n) {
                *x = [0x66, 0x67, 0xf0, 0xf3, 0x48, 0x0f, 0x64, 0x2e]
                    [(next(&mut state) % 8) as usize];
            }
            let cut = (next(&mut state) % 18) as usize;
            for mode in MODES {
                check_any(&b, mode);
                check_any(&b[..cut], mode);
            }
        }
    }

    #[test]
    fn all_two_byte_starts() {
        // Every first two bytes (with a fixed tail), whole and cut short.
        let tail = hex("05 11 22 33 44 55 66 77 88 99 aa bb cc dd");
        for first in 0..=255u8 {
            for second in 0..=255u8 {
                let mut b = std::vec![first, second];
                b.extend_from_slice(&tail);
                for mode in MODES {
                    check_any(&b, mode);
                    check_any(&b[..2], mode);
                    check_any(&b[..1], mode);
                }
            }
        }
    }
}
