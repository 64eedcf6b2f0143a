// SPDX-License-Identifier: GPL-2.0

//! The x86 register-state structs of the vCPU ioctls (`arch/x86/include/uapi/asm/kvm.h`):
//! `struct kvm_regs`, `kvm_segment`, `kvm_dtable`, `kvm_sregs`, `kvm_fpu`,
//! `kvm_debugregs`, `kvm_xcrs`, `kvm_vcpu_events`, and their byte encodings.
//!
//! Core-only (host-tested). x86.rs checks the sizes of `kvm_regs`, `kvm_sregs`,
//! `kvm_debugregs`, `kvm_fpu` and `kvm_vcpu_events` against the kernel's uapi
//! bindings at build time. Encodings are little-endian, as on x86.

/// Register numbers in x86 encoding order, as used for the GPR array.
// All eight legacy GPRs, named for reference; the code names a subset.
#[allow(dead_code)]
pub(crate) mod gpr {
    /// RAX.
    pub(crate) const RAX: usize = 0;
    /// RCX.
    pub(crate) const RCX: usize = 1;
    /// RDX.
    pub(crate) const RDX: usize = 2;
    /// RBX.
    pub(crate) const RBX: usize = 3;
    /// RSP.
    pub(crate) const RSP: usize = 4;
    /// RBP.
    pub(crate) const RBP: usize = 5;
    /// RSI.
    pub(crate) const RSI: usize = 6;
    /// RDI.
    pub(crate) const RDI: usize = 7;
}

/// A little-endian field reader over a byte buffer.
pub(crate) struct Rd<'a> {
    b: &'a [u8],
    off: usize,
}

impl<'a> Rd<'a> {
    /// Reads `b` from the start.
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Self { b, off: 0 }
    }
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(&self.b[self.off..self.off + N]);
        self.off += N;
        a
    }
    /// Next `u8`.
    pub(crate) fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    /// Next `u16`.
    pub(crate) fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    /// Next `u32`.
    pub(crate) fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    /// Next `u64`.
    pub(crate) fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    /// Skips `n` bytes (padding).
    pub(crate) fn skip(&mut self, n: usize) {
        self.off += n;
    }
}

/// A little-endian field writer into a byte buffer.
pub(crate) struct Wr<'a> {
    b: &'a mut [u8],
    off: usize,
}

impl<'a> Wr<'a> {
    /// Writes `b` from the start.
    pub(crate) fn new(b: &'a mut [u8]) -> Self {
        Self { b, off: 0 }
    }
    fn put(&mut self, v: &[u8]) {
        self.b[self.off..self.off + v.len()].copy_from_slice(v);
        self.off += v.len();
    }
    /// Appends a `u8`.
    pub(crate) fn u8(&mut self, v: u8) {
        self.put(&[v]);
    }
    /// Appends a `u16`.
    pub(crate) fn u16(&mut self, v: u16) {
        self.put(&v.to_le_bytes());
    }
    /// Appends a `u32`.
    pub(crate) fn u32(&mut self, v: u32) {
        self.put(&v.to_le_bytes());
    }
    /// Appends a `u64`.
    pub(crate) fn u64(&mut self, v: u64) {
        self.put(&v.to_le_bytes());
    }
    /// Appends `n` zero bytes (padding).
    pub(crate) fn zeros(&mut self, n: usize) {
        for _ in 0..n {
            self.u8(0);
        }
    }
}

/// `struct kvm_regs`: the general-purpose registers, RIP and RFLAGS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct KvmRegs {
    /// GPRs in x86 register-number order (RAX, RCX, RDX, RBX, RSP, RBP, RSI,
    /// RDI, R8..R15), not the struct's order.
    pub(crate) gprs: [u64; 16],
    /// RIP.
    pub(crate) rip: u64,
    /// RFLAGS.
    pub(crate) rflags: u64,
}

/// The struct's field order, as register numbers.
const KVM_REGS_ORDER: [usize; 16] = [0, 3, 1, 2, 6, 7, 4, 5, 8, 9, 10, 11, 12, 13, 14, 15];

impl KvmRegs {
    /// `sizeof(struct kvm_regs)`.
    pub(crate) const SIZE: usize = 144;

    /// Decodes the struct.
    pub(crate) fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let mut r = Rd::new(b);
        let mut s = Self::default();
        for &i in &KVM_REGS_ORDER {
            s.gprs[i] = r.u64();
        }
        s.rip = r.u64();
        s.rflags = r.u64();
        s
    }

    /// Encodes the struct.
    pub(crate) fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        let mut w = Wr::new(&mut b);
        for &i in &KVM_REGS_ORDER {
            w.u64(self.gprs[i]);
        }
        w.u64(self.rip);
        w.u64(self.rflags);
        b
    }
}

/// `struct kvm_segment`: a segment register in KVM's expanded form.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct KvmSegment {
    /// Base address.
    pub(crate) base: u64,
    /// Limit in bytes (already scaled by G).
    pub(crate) limit: u32,
    /// Selector.
    pub(crate) selector: u16,
    /// Type field (4 bits).
    pub(crate) type_: u8,
    /// P.
    pub(crate) present: u8,
    /// DPL.
    pub(crate) dpl: u8,
    /// D/B.
    pub(crate) db: u8,
    /// S (code/data, not system).
    pub(crate) s: u8,
    /// L (64-bit code).
    pub(crate) l: u8,
    /// G (granularity).
    pub(crate) g: u8,
    /// AVL.
    pub(crate) avl: u8,
    /// Unusable (null selector loaded, or never loaded).
    pub(crate) unusable: u8,
}

impl KvmSegment {
    /// Decodes one from `r`.
    pub(crate) fn read(r: &mut Rd<'_>) -> Self {
        let s = Self {
            base: r.u64(),
            limit: r.u32(),
            selector: r.u16(),
            type_: r.u8(),
            present: r.u8(),
            dpl: r.u8(),
            db: r.u8(),
            s: r.u8(),
            l: r.u8(),
            g: r.u8(),
            avl: r.u8(),
            unusable: r.u8(),
        };
        r.skip(1);
        s
    }

    /// Encodes one into `w`.
    pub(crate) fn write(&self, w: &mut Wr<'_>) {
        w.u64(self.base);
        w.u32(self.limit);
        w.u16(self.selector);
        for v in [self.type_, self.present, self.dpl, self.db, self.s, self.l, self.g, self.avl, self.unusable] {
            w.u8(v);
        }
        w.zeros(1);
    }

    /// The 12-bit attribute field of a descriptor (type, S, DPL, P in bits
    /// 0-7; AVL, L, D/B, G in bits 8-11), as the VMCB keeps it. An unusable
    /// segment is encoded with P clear.
    pub(crate) fn attrib(&self) -> u16 {
        let p = if self.unusable != 0 { 0 } else { self.present & 1 };
        u16::from(self.type_ & 0xf)
            | u16::from(self.s & 1) << 4
            | u16::from(self.dpl & 3) << 5
            | u16::from(p) << 7
            | u16::from(self.avl & 1) << 8
            | u16::from(self.l & 1) << 9
            | u16::from(self.db & 1) << 10
            | u16::from(self.g & 1) << 11
    }

    /// The inverse of [`KvmSegment::attrib`]; `unusable` is set when P is clear.
    pub(crate) fn from_attrib(selector: u16, base: u64, limit: u32, attrib: u16) -> Self {
        let bit = |n: u16| ((attrib >> n) & 1) as u8;
        Self {
            base,
            limit,
            selector,
            type_: (attrib & 0xf) as u8,
            s: bit(4),
            dpl: ((attrib >> 5) & 3) as u8,
            present: bit(7),
            avl: bit(8),
            l: bit(9),
            db: bit(10),
            g: bit(11),
            unusable: 1 - bit(7),
        }
    }
}

/// `struct kvm_dtable`: GDTR or IDTR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct KvmDtable {
    /// Base address.
    pub(crate) base: u64,
    /// Limit.
    pub(crate) limit: u16,
}

impl KvmDtable {
    fn read(r: &mut Rd<'_>) -> Self {
        let d = Self { base: r.u64(), limit: r.u16() };
        r.skip(6);
        d
    }
    fn write(&self, w: &mut Wr<'_>) {
        w.u64(self.base);
        w.u16(self.limit);
        w.zeros(6);
    }
}

/// The segment registers of `kvm_sregs`, in its order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seg {
    /// CS.
    Cs,
    /// DS.
    Ds,
    /// ES.
    Es,
    /// FS.
    Fs,
    /// GS.
    Gs,
    /// SS.
    Ss,
    /// TR.
    Tr,
    /// LDTR.
    Ldtr,
}

impl Seg {
    /// All eight, in `kvm_sregs` order.
    pub(crate) const ALL: [Seg; 8] = [Seg::Cs, Seg::Ds, Seg::Es, Seg::Fs, Seg::Gs, Seg::Ss, Seg::Tr, Seg::Ldtr];
}

/// `struct kvm_sregs`: segments, descriptor tables, control registers, EFER,
/// the APIC base and the pending-interrupt bitmap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct KvmSregs {
    /// Segments in [`Seg::ALL`] order.
    pub(crate) segs: [KvmSegment; 8],
    /// GDTR.
    pub(crate) gdt: KvmDtable,
    /// IDTR.
    pub(crate) idt: KvmDtable,
    /// CR0.
    pub(crate) cr0: u64,
    /// CR2.
    pub(crate) cr2: u64,
    /// CR3.
    pub(crate) cr3: u64,
    /// CR4.
    pub(crate) cr4: u64,
    /// CR8 (TPR >> 4).
    pub(crate) cr8: u64,
    /// EFER.
    pub(crate) efer: u64,
    /// APIC base MSR.
    pub(crate) apic_base: u64,
    /// Pending external interrupt (one bit; only with no in-kernel irqchip).
    pub(crate) interrupt_bitmap: [u64; 4],
}

impl KvmSregs {
    /// `sizeof(struct kvm_sregs)`.
    pub(crate) const SIZE: usize = 312;

    /// The segment `s`.
    pub(crate) fn seg(&self, s: Seg) -> &KvmSegment {
        &self.segs[s as usize]
    }

    /// The segment `s`, mutably.
    pub(crate) fn seg_mut(&mut self, s: Seg) -> &mut KvmSegment {
        &mut self.segs[s as usize]
    }

    /// Decodes the struct.
    pub(crate) fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let mut r = Rd::new(b);
        let mut s = Self::default();
        for seg in s.segs.iter_mut() {
            *seg = KvmSegment::read(&mut r);
        }
        s.gdt = KvmDtable::read(&mut r);
        s.idt = KvmDtable::read(&mut r);
        s.cr0 = r.u64();
        s.cr2 = r.u64();
        s.cr3 = r.u64();
        s.cr4 = r.u64();
        s.cr8 = r.u64();
        s.efer = r.u64();
        s.apic_base = r.u64();
        for w in s.interrupt_bitmap.iter_mut() {
            *w = r.u64();
        }
        s
    }

    /// Encodes the struct.
    pub(crate) fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        let mut w = Wr::new(&mut b);
        for seg in &self.segs {
            seg.write(&mut w);
        }
        self.gdt.write(&mut w);
        self.idt.write(&mut w);
        for v in [self.cr0, self.cr2, self.cr3, self.cr4, self.cr8, self.efer, self.apic_base] {
            w.u64(v);
        }
        for v in self.interrupt_bitmap {
            w.u64(v);
        }
        b
    }
}

/// `struct kvm_debugregs`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct KvmDebugRegs {
    /// DR0-DR3.
    pub(crate) db: [u64; 4],
    /// DR6.
    pub(crate) dr6: u64,
    /// DR7.
    pub(crate) dr7: u64,
    /// Flags (must be 0).
    pub(crate) flags: u64,
}

impl KvmDebugRegs {
    /// `sizeof(struct kvm_debugregs)`.
    pub(crate) const SIZE: usize = 128;

    /// Decodes the struct (the reserved tail is ignored, as in C).
    pub(crate) fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let mut r = Rd::new(b);
        Self { db: [r.u64(), r.u64(), r.u64(), r.u64()], dr6: r.u64(), dr7: r.u64(), flags: r.u64() }
    }

    /// Encodes the struct (reserved fields zero).
    pub(crate) fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        let mut w = Wr::new(&mut b);
        for v in self.db {
            w.u64(v);
        }
        w.u64(self.dr6);
        w.u64(self.dr7);
        w.u64(self.flags);
        b
    }
}

/// `struct kvm_fpu` (the FXSAVE subset KVM_GET_FPU/KVM_SET_FPU exchange).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KvmFpu {
    /// ST0-ST7/MM0-MM7, 16 bytes each.
    pub(crate) fpr: [[u8; 16]; 8],
    /// FCW.
    pub(crate) fcw: u16,
    /// FSW.
    pub(crate) fsw: u16,
    /// Abridged tag word.
    pub(crate) ftwx: u8,
    /// FOP.
    pub(crate) last_opcode: u16,
    /// FIP.
    pub(crate) last_ip: u64,
    /// FDP.
    pub(crate) last_dp: u64,
    /// XMM0-XMM15.
    pub(crate) xmm: [[u8; 16]; 16],
    /// MXCSR.
    pub(crate) mxcsr: u32,
}

impl KvmFpu {
    /// `sizeof(struct kvm_fpu)`.
    pub(crate) const SIZE: usize = 416;

    /// Decodes the struct.
    pub(crate) fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let mut fpr = [[0u8; 16]; 8];
        for (i, f) in fpr.iter_mut().enumerate() {
            f.copy_from_slice(&b[i * 16..i * 16 + 16]);
        }
        let mut r = Rd::new(&b[128..]);
        let fcw = r.u16();
        let fsw = r.u16();
        let ftwx = r.u8();
        r.skip(1);
        let last_opcode = r.u16();
        let last_ip = r.u64();
        let last_dp = r.u64();
        let mut xmm = [[0u8; 16]; 16];
        for (i, x) in xmm.iter_mut().enumerate() {
            x.copy_from_slice(&b[152 + i * 16..152 + i * 16 + 16]);
        }
        let mxcsr = u32::from_le_bytes([b[416 - 8], b[416 - 7], b[416 - 6], b[416 - 5]]);
        Self { fpr, fcw, fsw, ftwx, last_opcode, last_ip, last_dp, xmm, mxcsr }
    }

    /// Encodes the struct.
    pub(crate) fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        for (i, f) in self.fpr.iter().enumerate() {
            b[i * 16..i * 16 + 16].copy_from_slice(f);
        }
        {
            let mut w = Wr::new(&mut b[128..152]);
            w.u16(self.fcw);
            w.u16(self.fsw);
            w.u8(self.ftwx);
            w.u8(0);
            w.u16(self.last_opcode);
            w.u64(self.last_ip);
            w.u64(self.last_dp);
        }
        for (i, x) in self.xmm.iter().enumerate() {
            b[152 + i * 16..152 + i * 16 + 16].copy_from_slice(x);
        }
        b[408..412].copy_from_slice(&self.mxcsr.to_le_bytes());
        b
    }

    /// Decodes the legacy region of an FXSAVE/XSAVE image (512 bytes,
    /// SDM vol. 1, table 10-2).
    pub(crate) fn from_fxsave(fx: &[u8]) -> Self {
        let mut r = Rd::new(fx);
        let fcw = r.u16();
        let fsw = r.u16();
        let ftwx = r.u8();
        r.skip(1);
        let last_opcode = r.u16();
        let last_ip = r.u64();
        let last_dp = r.u64();
        let mxcsr = r.u32();
        let mut fpr = [[0u8; 16]; 8];
        for (i, f) in fpr.iter_mut().enumerate() {
            f.copy_from_slice(&fx[32 + i * 16..48 + i * 16]);
        }
        let mut xmm = [[0u8; 16]; 16];
        for (i, x) in xmm.iter_mut().enumerate() {
            x.copy_from_slice(&fx[160 + i * 16..176 + i * 16]);
        }
        Self { fpr, fcw, fsw, ftwx, last_opcode, last_ip, last_dp, xmm, mxcsr }
    }

    /// Writes this state into the legacy region of an FXSAVE/XSAVE image,
    /// keeping MXCSR_MASK and the reserved bytes.
    pub(crate) fn to_fxsave(&self, fx: &mut [u8]) {
        {
            let mut w = Wr::new(&mut fx[0..28]);
            w.u16(self.fcw);
            w.u16(self.fsw);
            w.u8(self.ftwx);
            w.u8(0);
            w.u16(self.last_opcode);
            w.u64(self.last_ip);
            w.u64(self.last_dp);
            w.u32(self.mxcsr);
        }
        for (i, f) in self.fpr.iter().enumerate() {
            fx[32 + i * 16..48 + i * 16].copy_from_slice(f);
        }
        for (i, x) in self.xmm.iter().enumerate() {
            fx[160 + i * 16..176 + i * 16].copy_from_slice(x);
        }
    }
}

/// `struct kvm_vcpu_events`: pending and injected events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct KvmVcpuEvents {
    /// exception.injected.
    pub(crate) exc_injected: u8,
    /// exception.nr.
    pub(crate) exc_nr: u8,
    /// exception.has_error_code.
    pub(crate) exc_has_error_code: u8,
    /// exception.pending.
    pub(crate) exc_pending: u8,
    /// exception.error_code.
    pub(crate) exc_error_code: u32,
    /// interrupt.injected.
    pub(crate) irq_injected: u8,
    /// interrupt.nr.
    pub(crate) irq_nr: u8,
    /// interrupt.soft.
    pub(crate) irq_soft: u8,
    /// interrupt.shadow (KVM_X86_SHADOW_INT_MOV_SS | _STI).
    pub(crate) irq_shadow: u8,
    /// nmi.injected.
    pub(crate) nmi_injected: u8,
    /// nmi.pending.
    pub(crate) nmi_pending: u8,
    /// nmi.masked.
    pub(crate) nmi_masked: u8,
    /// sipi_vector.
    pub(crate) sipi_vector: u32,
    /// flags (KVM_VCPUEVENT_VALID_*).
    pub(crate) flags: u32,
    /// smi.smm, pending, smm_inside_nmi, latched_init.
    pub(crate) smi: [u8; 4],
    /// triple_fault.pending.
    pub(crate) triple_fault_pending: u8,
    /// exception_has_payload.
    pub(crate) exception_has_payload: u8,
    /// exception_payload.
    pub(crate) exception_payload: u64,
}

impl KvmVcpuEvents {
    /// `sizeof(struct kvm_vcpu_events)`.
    pub(crate) const SIZE: usize = 64;

    /// Decodes the struct.
    pub(crate) fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let mut r = Rd::new(b);
        let mut e = Self {
            exc_injected: r.u8(),
            exc_nr: r.u8(),
            exc_has_error_code: r.u8(),
            exc_pending: r.u8(),
            exc_error_code: r.u32(),
            irq_injected: r.u8(),
            irq_nr: r.u8(),
            irq_soft: r.u8(),
            irq_shadow: r.u8(),
            nmi_injected: r.u8(),
            nmi_pending: r.u8(),
            nmi_masked: r.u8(),
            ..Default::default()
        };
        r.skip(1);
        e.sipi_vector = r.u32();
        e.flags = r.u32();
        e.smi = [r.u8(), r.u8(), r.u8(), r.u8()];
        e.triple_fault_pending = r.u8();
        r.skip(26);
        e.exception_has_payload = r.u8();
        e.exception_payload = r.u64();
        e
    }

    /// Encodes the struct.
    pub(crate) fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        let mut w = Wr::new(&mut b);
        for v in [self.exc_injected, self.exc_nr, self.exc_has_error_code, self.exc_pending] {
            w.u8(v);
        }
        w.u32(self.exc_error_code);
        for v in [self.irq_injected, self.irq_nr, self.irq_soft, self.irq_shadow] {
            w.u8(v);
        }
        for v in [self.nmi_injected, self.nmi_pending, self.nmi_masked, 0] {
            w.u8(v);
        }
        w.u32(self.sipi_vector);
        w.u32(self.flags);
        for v in self.smi {
            w.u8(v);
        }
        w.u8(self.triple_fault_pending);
        w.zeros(26);
        w.u8(self.exception_has_payload);
        w.u64(self.exception_payload);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regs_round_trip_and_order() {
        let mut b = [0u8; KvmRegs::SIZE];
        for i in 0..18 {
            b[i * 8] = i as u8 + 1;
        }
        let r = KvmRegs::from_bytes(&b);
        // struct order: rax rbx rcx rdx rsi rdi rsp rbp r8..r15 rip rflags
        assert_eq!(r.gprs[gpr::RAX], 1);
        assert_eq!(r.gprs[gpr::RBX], 2);
        assert_eq!(r.gprs[gpr::RCX], 3);
        assert_eq!(r.gprs[gpr::RDX], 4);
        assert_eq!(r.gprs[gpr::RSI], 5);
        assert_eq!(r.gprs[gpr::RDI], 6);
        assert_eq!(r.gprs[gpr::RSP], 7);
        assert_eq!(r.gprs[gpr::RBP], 8);
        assert_eq!(r.gprs[15], 16);
        assert_eq!(r.rip, 17);
        assert_eq!(r.rflags, 18);
        assert_eq!(r.to_bytes(), b);
    }

    #[test]
    fn sregs_round_trip() {
        let mut b = [0u8; KvmSregs::SIZE];
        for (i, v) in b.iter_mut().enumerate() {
            *v = (i * 7) as u8;
        }
        // Padding bytes are not kept: zero them in the expectation.
        for s in 0..8 {
            b[s * 24 + 23] = 0;
        }
        for d in 0..2 {
            for p in 0..6 {
                b[192 + d * 16 + 10 + p] = 0;
            }
        }
        let s = KvmSregs::from_bytes(&b);
        assert_eq!(s.to_bytes(), b);
        assert_eq!(s.cr0, u64::from_le_bytes(b[224..232].try_into().unwrap()));
        assert_eq!(s.apic_base, u64::from_le_bytes(b[272..280].try_into().unwrap()));
    }

    #[test]
    fn segment_attrib_round_trip() {
        let cs = KvmSegment {
            base: 0,
            limit: 0xffff_ffff,
            selector: 8,
            type_: 0xb,
            present: 1,
            dpl: 0,
            db: 0,
            s: 1,
            l: 1,
            g: 1,
            avl: 0,
            unusable: 0,
        };
        assert_eq!(cs.attrib(), 0xa9b);
        assert_eq!(KvmSegment::from_attrib(8, 0, 0xffff_ffff, 0xa9b), cs);
        let mut u = cs;
        u.unusable = 1;
        assert_eq!(u.attrib() & 0x80, 0);
    }

    #[test]
    fn fpu_and_events_round_trip() {
        let mut b = [0u8; KvmFpu::SIZE];
        for (i, v) in b.iter_mut().enumerate() {
            *v = i as u8;
        }
        b[133] = 0; // pad1
        for v in &mut b[412..416] {
            *v = 0; // pad2
        }
        assert_eq!(KvmFpu::from_bytes(&b).to_bytes(), b);
        let mut fx = [0u8; 512];
        let f = KvmFpu::from_bytes(&b);
        f.to_fxsave(&mut fx);
        assert_eq!(KvmFpu::from_fxsave(&fx), f);

        let mut e = [0u8; KvmVcpuEvents::SIZE];
        for (i, v) in e.iter_mut().enumerate() {
            *v = i as u8 + 1;
        }
        e[15] = 0;
        for v in &mut e[29..55] {
            *v = 0;
        }
        assert_eq!(KvmVcpuEvents::from_bytes(&e).to_bytes(), e);
    }
}
