// SPDX-License-Identifier: GPL-2.0

//! The guest's machine-check architecture (Intel SDM vol. 3B, chapter 16;
//! AMD APM vol. 2, chapter 9): the global MSRs, the error-reporting banks and
//! their CMCI controls, what `KVM_X86_SETUP_MCE` configures and what
//! `KVM_X86_SET_MCE` injects. In the C KVM: `set_msr_mce()`, `get_msr_mce()`,
//! `kvm_vcpu_ioctl_x86_setup_mce()`, `kvm_vcpu_ioctl_x86_set_mce()` and
//! `kvm_vcpu_x86_set_ucna()` in x86.c.
//!
//! Core-only (host-tested). The vCPU owns one [`Mce`]; it delivers what
//! [`Mce::inject`] asks for (#MC, a CMCI through the LAPIC, a triple fault).

/// `KVM_MAX_MCE_BANKS`: the banks a vCPU has before `KVM_X86_SETUP_MCE`
/// (and at most), also what `KVM_CAP_MCE` answers.
pub(crate) const KVM_MAX_MCE_BANKS: usize = 32;

/// `MCG_CAP.MCG_CTL_P`: `IA32_MCG_CTL` exists.
pub(crate) const MCG_CTL_P: u64 = 1 << 8;
/// `MCG_CAP.MCG_CMCI_P`: corrected machine-check interrupts (Intel).
pub(crate) const MCG_CMCI_P: u64 = 1 << 10;
/// `MCG_CAP.MCG_LMCE_P`: local machine checks (`IA32_FEATURE_CONTROL.LMCE`
/// and `IA32_MCG_EXT_CTL`); no backend offers it yet.
pub(crate) const MCG_LMCE_P: u64 = 1 << 27;
/// `MCG_CAP.MCG_SER_P`: software error recovery.
pub(crate) const MCG_SER_P: u64 = 1 << 24;
/// `MCG_STATUS.MCIP`: a machine check is in progress.
pub(crate) const MCG_STATUS_MCIP: u64 = 1 << 2;

/// `MCi_STATUS.VAL`: the bank holds an error.
pub(crate) const MCI_STATUS_VAL: u64 = 1 << 63;
/// `MCi_STATUS.OVER`: an error was lost.
pub(crate) const MCI_STATUS_OVER: u64 = 1 << 62;
/// `MCi_STATUS.UC`: uncorrected.
pub(crate) const MCI_STATUS_UC: u64 = 1 << 61;
/// `MCi_STATUS.PCC`: processor context corrupt.
pub(crate) const MCI_STATUS_PCC: u64 = 1 << 57;
/// `MCi_STATUS.S`: signalled as a machine-check exception.
pub(crate) const MCI_STATUS_S: u64 = 1 << 56;
/// `MCi_STATUS.AR`: action required.
pub(crate) const MCI_STATUS_AR: u64 = 1 << 55;
/// `MCi_CTL2.CMCI_EN`.
pub(crate) const MCI_CTL2_CMCI_EN: u64 = 1 << 30;
/// `MCi_CTL2` corrected-error threshold.
pub(crate) const MCI_CTL2_CMCI_THRESHOLD_MASK: u64 = 0x7fff;

/// `IA32_P5_MC_ADDR`.
pub(crate) const MSR_IA32_P5_MC_ADDR: u32 = 0;
/// `IA32_P5_MC_TYPE`.
pub(crate) const MSR_IA32_P5_MC_TYPE: u32 = 1;
/// `IA32_MCG_CAP`.
pub(crate) const MSR_IA32_MCG_CAP: u32 = 0x179;
/// `IA32_MCG_STATUS`.
pub(crate) const MSR_IA32_MCG_STATUS: u32 = 0x17a;
/// `IA32_MCG_CTL`.
pub(crate) const MSR_IA32_MCG_CTL: u32 = 0x17b;
/// `IA32_MC0_CTL2`; bank i's is at `+ i`.
pub(crate) const MSR_IA32_MC0_CTL2: u32 = 0x280;
/// `IA32_MC0_CTL`; bank i's CTL, STATUS, ADDR, MISC are at `+ 4 i + 0..4`.
pub(crate) const MSR_IA32_MC0_CTL: u32 = 0x400;

const MAX_BANKS: u32 = KVM_MAX_MCE_BANKS as u32;

/// `struct kvm_x86_mce`, the argument of `KVM_X86_SET_MCE` (its padding is
/// not checked, as in the C KVM).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct KvmX86Mce {
    /// `MCi_STATUS` to report.
    pub(crate) status: u64,
    /// `MCi_ADDR`.
    pub(crate) addr: u64,
    /// `MCi_MISC`.
    pub(crate) misc: u64,
    /// `MCG_STATUS`.
    pub(crate) mcg_status: u64,
    /// The bank.
    pub(crate) bank: u8,
}

impl KvmX86Mce {
    /// `sizeof(struct kvm_x86_mce)`.
    pub(crate) const SIZE: usize = 64;

    /// Decodes the struct (little-endian).
    pub(crate) fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let q = |i: usize| {
            u64::from_le_bytes([
                b[i],
                b[i + 1],
                b[i + 2],
                b[i + 3],
                b[i + 4],
                b[i + 5],
                b[i + 6],
                b[i + 7],
            ])
        };
        Self {
            status: q(0),
            addr: q(8),
            misc: q(16),
            mcg_status: q(24),
            bank: b[32],
        }
    }

    /// An uncorrected error that needs no action (UCNA): reported by CMCI,
    /// not #MC (C: `is_ucna()`).
    fn is_ucna(&self) -> bool {
        self.mcg_status == 0
            && self.status & (MCI_STATUS_PCC | MCI_STATUS_S | MCI_STATUS_AR) == 0
            && self.status & MCI_STATUS_VAL != 0
            && self.status & MCI_STATUS_UC != 0
    }
}

/// What the vCPU must deliver after [`Mce::inject`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Only the banks changed (a corrected error, or reporting disabled).
    None,
    /// A corrected machine-check interrupt through LVT CMCI.
    Cmci,
    /// A machine-check exception.
    MachineCheck,
    /// A second uncorrected error while one is in progress, or with
    /// CR4.MCE clear: the processor shuts down.
    TripleFault,
}

/// The machine-check state of one vCPU.
#[derive(Clone, Debug)]
pub(crate) struct Mce {
    mcg_cap: u64,
    mcg_status: u64,
    mcg_ctl: u64,
    /// CTL, STATUS, ADDR, MISC of each bank.
    banks: [u64; 4 * KVM_MAX_MCE_BANKS],
    /// `MCi_CTL2` of each bank.
    ctl2: [u64; KVM_MAX_MCE_BANKS],
}

impl Default for Mce {
    fn default() -> Self {
        Self::new()
    }
}

impl Mce {
    /// A new vCPU's state: all banks present, nothing set (C:
    /// `kvm_arch_vcpu_create()` sets `mcg_cap` to the bank count alone).
    pub(crate) const fn new() -> Self {
        Self {
            mcg_cap: KVM_MAX_MCE_BANKS as u64,
            mcg_status: 0,
            mcg_ctl: 0,
            banks: [0; 4 * KVM_MAX_MCE_BANKS],
            ctl2: [0; KVM_MAX_MCE_BANKS],
        }
    }

    fn bank_count(&self) -> u32 {
        (self.mcg_cap & 0xff) as u32
    }

    /// Whether local machine checks are offered to the guest (C:
    /// `vmx_setup_mce()` then lets it set `IA32_FEATURE_CONTROL.LMCE`).
    pub(crate) fn lmce(&self) -> bool {
        self.mcg_cap & MCG_LMCE_P != 0
    }

    /// Whether CMCI is offered to the guest (the LAPIC then has LVT CMCI).
    pub(crate) fn cmci(&self) -> bool {
        self.mcg_cap & MCG_CMCI_P != 0
    }

    /// `KVM_X86_SETUP_MCE`: `Err` (EINVAL) for no banks, more than
    /// [`KVM_MAX_MCE_BANKS`], or capability bits outside `supported` (the
    /// bank count and the extended-register count bits aside).
    pub(crate) fn setup(&mut self, mcg_cap: u64, supported: u64) -> Result<(), ()> {
        let n = (mcg_cap & 0xff) as usize;
        if n == 0 || n > KVM_MAX_MCE_BANKS || mcg_cap & !(supported | 0xff | 0xff_0000) != 0 {
            return Err(());
        }
        self.mcg_cap = mcg_cap;
        if mcg_cap & MCG_CTL_P != 0 {
            self.mcg_ctl = !0;
        }
        for b in 0..n {
            self.banks[4 * b] = !0;
            if mcg_cap & MCG_CMCI_P != 0 {
                self.ctl2[b] = 0;
            }
        }
        Ok(())
    }

    /// Reads a machine-check MSR: `None` if `msr` is not one (C: the ranges
    /// `kvm_get_msr_common()` hands to `get_msr_mce()`), `Some(Err(()))` for #GP (a bank beyond the count,
    /// or a register the capabilities do not offer, read by the guest).
    pub(crate) fn get_msr(&self, msr: u32, host: bool) -> Option<Result<u64, ()>> {
        let n = self.bank_count();
        Some(match msr {
            MSR_IA32_P5_MC_ADDR | MSR_IA32_P5_MC_TYPE => Ok(0),
            MSR_IA32_MCG_CAP => Ok(self.mcg_cap),
            MSR_IA32_MCG_CTL if self.mcg_cap & MCG_CTL_P == 0 && !host => Err(()),
            MSR_IA32_MCG_CTL => Ok(self.mcg_ctl),
            MSR_IA32_MCG_STATUS => Ok(self.mcg_status),
            m if (MSR_IA32_MC0_CTL2..MSR_IA32_MC0_CTL2 + MAX_BANKS).contains(&m) => {
                let i = m - MSR_IA32_MC0_CTL2;
                if i >= n || (!self.cmci() && !host) {
                    Err(())
                } else {
                    Ok(self.ctl2[i as usize])
                }
            }
            m if (MSR_IA32_MC0_CTL..MSR_IA32_MC0_CTL + 4 * MAX_BANKS).contains(&m) => {
                let i = m - MSR_IA32_MC0_CTL;
                if i >= 4 * n {
                    Err(())
                } else {
                    Ok(self.banks[i as usize])
                }
            }
            _ => return None,
        })
    }

    /// Writes a machine-check MSR: `None` if the vCPU handles `msr`
    /// elsewhere (`MCG_CAP` and the P5 registers are read-only here, as in
    /// the C KVM), `Some(Err(()))` for #GP. `status_writable`: AMD's
    /// HWCR.McStatusWrEn lets the guest write non-zero `MCi_STATUS`.
    pub(crate) fn set_msr(
        &mut self,
        msr: u32,
        data: u64,
        host: bool,
        status_writable: bool,
    ) -> Option<Result<(), ()>> {
        let n = self.bank_count();
        Some(match msr {
            MSR_IA32_MCG_STATUS => {
                self.mcg_status = data;
                Ok(())
            }
            MSR_IA32_MCG_CTL => {
                if (self.mcg_cap & MCG_CTL_P == 0 && (data != 0 || !host))
                    || (data != 0 && data != !0)
                {
                    Err(())
                } else {
                    self.mcg_ctl = data;
                    Ok(())
                }
            }
            m if (MSR_IA32_MC0_CTL2..MSR_IA32_MC0_CTL2 + MAX_BANKS).contains(&m) => {
                let i = m - MSR_IA32_MC0_CTL2;
                if i >= n
                    || (!self.cmci() && (data != 0 || !host))
                    || data & !(MCI_CTL2_CMCI_EN | MCI_CTL2_CMCI_THRESHOLD_MASK) != 0
                {
                    Err(())
                } else {
                    self.ctl2[i as usize] = data;
                    Ok(())
                }
            }
            m if (MSR_IA32_MC0_CTL..MSR_IA32_MC0_CTL + 4 * MAX_BANKS).contains(&m) => {
                let i = m - MSR_IA32_MC0_CTL;
                let ctl = i % 4 == 0;
                let status = i % 4 == 1;
                // MCi_CTL: 0 or all ones, with bits 10 (an AMD K8 GART
                // workaround of Linux) and 0 (UnixWare) allowed clear.
                if i >= 4 * n
                    || (ctl && data != 0 && (data | (1 << 10) | 1) != !0)
                    || (status && !host && data != 0 && !status_writable)
                {
                    Err(())
                } else {
                    self.banks[i as usize] = data;
                    Ok(())
                }
            }
            _ => return None,
        })
    }

    /// `KVM_X86_SET_MCE`: records the error in its bank and says what to
    /// deliver; `Err` (EINVAL) for a bank beyond the count or a status
    /// without VAL. `cr4_mce`: the guest's CR4.MCE.
    pub(crate) fn inject(&mut self, mce: &KvmX86Mce, cr4_mce: bool) -> Result<Delivery, ()> {
        let n = self.bank_count();
        if u32::from(mce.bank) >= n || mce.status & MCI_STATUS_VAL == 0 {
            return Err(());
        }
        let b = 4 * usize::from(mce.bank);
        if mce.is_ucna() {
            self.banks[b + 1] = mce.status;
            self.banks[b + 2] = mce.addr;
            self.banks[b + 3] = mce.misc;
            self.mcg_status = mce.mcg_status;
            let cmci = self.cmci() && self.ctl2[usize::from(mce.bank)] & MCI_CTL2_CMCI_EN != 0;
            return Ok(if cmci { Delivery::Cmci } else { Delivery::None });
        }
        let uc = mce.status & MCI_STATUS_UC != 0;
        // Uncorrected-error reporting disabled globally or for the bank.
        if uc && ((self.mcg_cap & MCG_CTL_P != 0 && self.mcg_ctl != !0) || self.banks[b] != !0) {
            return Ok(Delivery::None);
        }
        let mut status = mce.status;
        if uc {
            if self.mcg_status & MCG_STATUS_MCIP != 0 || !cr4_mce {
                return Ok(Delivery::TripleFault);
            }
            if self.banks[b + 1] & MCI_STATUS_VAL != 0 {
                status |= MCI_STATUS_OVER;
            }
            self.banks[b + 2] = mce.addr;
            self.banks[b + 3] = mce.misc;
            self.mcg_status = mce.mcg_status;
            self.banks[b + 1] = status;
            Ok(Delivery::MachineCheck)
        } else if self.banks[b + 1] & MCI_STATUS_VAL == 0 || self.banks[b + 1] & MCI_STATUS_UC == 0
        {
            // A corrected error: it replaces a corrected one (OVER set).
            if self.banks[b + 1] & MCI_STATUS_VAL != 0 {
                status |= MCI_STATUS_OVER;
            }
            self.banks[b + 2] = mce.addr;
            self.banks[b + 3] = mce.misc;
            self.banks[b + 1] = status;
            Ok(Delivery::None)
        } else {
            // An uncorrected error is kept; the corrected one is lost.
            self.banks[b + 1] |= MCI_STATUS_OVER;
            Ok(Delivery::None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUPPORTED: u64 = MCG_CTL_P | MCG_SER_P | MCG_CMCI_P;

    fn setup(cap: u64) -> Mce {
        let mut m = Mce::new();
        m.setup(cap, SUPPORTED).unwrap();
        m
    }

    #[test]
    fn setup_checks_the_bank_count_and_capabilities() {
        let mut m = Mce::new();
        assert_eq!(m.get_msr(MSR_IA32_MCG_CAP, false), Some(Ok(32)));
        assert_eq!(m.setup(0, SUPPORTED), Err(()));
        assert_eq!(m.setup(33, SUPPORTED), Err(()));
        assert_eq!(
            m.setup(4 | (1 << 9), SUPPORTED),
            Err(()),
            "MCG_EXT_P is not offered"
        );
        // The extended-register count (bits 23:16) is let through, as in C.
        assert_eq!(m.setup(4 | MCG_CTL_P | (3 << 16), SUPPORTED), Ok(()));
        assert_eq!(m.get_msr(MSR_IA32_MCG_CTL, false), Some(Ok(!0)));
        assert_eq!(m.get_msr(MSR_IA32_MC0_CTL + 4 * 3, false), Some(Ok(!0)));
        assert_eq!(m.get_msr(MSR_IA32_MC0_CTL + 4 * 4, false), Some(Err(())));
        assert_eq!(m.get_msr(0x1234, false), None);
    }

    #[test]
    fn msr_rules_follow_the_c_kvm() {
        let mut m = setup(2);
        // MCG_CTL without MCG_CTL_P: #GP for the guest, 0 from the host.
        assert_eq!(m.get_msr(MSR_IA32_MCG_CTL, false), Some(Err(())));
        assert_eq!(m.set_msr(MSR_IA32_MCG_CTL, 0, true, false), Some(Ok(())));
        assert_eq!(m.set_msr(MSR_IA32_MCG_CTL, 0, false, false), Some(Err(())));
        // CTL2 without CMCI: #GP for the guest.
        assert_eq!(m.get_msr(MSR_IA32_MC0_CTL2, false), Some(Err(())));
        assert_eq!(
            m.set_msr(MSR_IA32_MC0_CTL2, MCI_CTL2_CMCI_EN, false, false),
            Some(Err(()))
        );
        // MCi_CTL: 0 or all ones (bits 10 and 0 may be clear).
        assert_eq!(
            m.set_msr(MSR_IA32_MC0_CTL, 0x5, false, false),
            Some(Err(()))
        );
        assert_eq!(
            m.set_msr(MSR_IA32_MC0_CTL, !0 & !(1 << 10) & !1, false, false),
            Some(Ok(()))
        );
        // MCi_STATUS: 0 by the guest, anything by the host or with McStatusWrEn.
        assert_eq!(
            m.set_msr(MSR_IA32_MC0_CTL + 1, 5, false, false),
            Some(Err(()))
        );
        assert_eq!(
            m.set_msr(MSR_IA32_MC0_CTL + 1, 5, false, true),
            Some(Ok(()))
        );
        assert_eq!(
            m.set_msr(MSR_IA32_MC0_CTL + 1, 0, false, false),
            Some(Ok(()))
        );
        assert_eq!(
            m.set_msr(MSR_IA32_MC0_CTL + 1, 7, true, false),
            Some(Ok(()))
        );
        // Beyond the bank count.
        assert_eq!(
            m.set_msr(MSR_IA32_MC0_CTL + 8, 0, true, false),
            Some(Err(()))
        );
        // MCG_CAP is read-only (not handled here).
        assert_eq!(m.set_msr(MSR_IA32_MCG_CAP, 1, true, false), None);
        let mut c = setup(2 | MCG_CMCI_P);
        assert_eq!(
            c.set_msr(MSR_IA32_MC0_CTL2 + 1, MCI_CTL2_CMCI_EN | 5, false, false),
            Some(Ok(()))
        );
        assert_eq!(
            c.set_msr(MSR_IA32_MC0_CTL2 + 1, 1 << 31, false, false),
            Some(Err(())),
            "reserved bit"
        );
        assert_eq!(
            c.get_msr(MSR_IA32_MC0_CTL2 + 1, false),
            Some(Ok(MCI_CTL2_CMCI_EN | 5))
        );
        assert_eq!(c.get_msr(MSR_IA32_MC0_CTL2 + 2, true), Some(Err(())));
    }

    fn ucna(bank: u8) -> KvmX86Mce {
        KvmX86Mce {
            status: MCI_STATUS_VAL | MCI_STATUS_UC | 0x17,
            addr: 0x1234_5000,
            misc: 0x86,
            mcg_status: 0,
            bank,
        }
    }

    #[test]
    fn ucna_is_recorded_and_signalled_by_cmci_if_enabled() {
        let mut m = setup(2 | MCG_CMCI_P);
        assert_eq!(m.inject(&ucna(1), true), Ok(Delivery::None));
        assert_eq!(
            m.get_msr(MSR_IA32_MC0_CTL + 5, true),
            Some(Ok(ucna(1).status))
        );
        assert_eq!(m.get_msr(MSR_IA32_MC0_CTL + 6, true), Some(Ok(0x1234_5000)));
        assert_eq!(m.get_msr(MSR_IA32_MC0_CTL + 7, true), Some(Ok(0x86)));
        m.set_msr(MSR_IA32_MC0_CTL2 + 1, MCI_CTL2_CMCI_EN, false, false)
            .unwrap()
            .unwrap();
        assert_eq!(m.inject(&ucna(1), true), Ok(Delivery::Cmci));
        // Without MCG_CMCI_P there is no CMCI.
        let mut n = setup(2);
        assert_eq!(n.inject(&ucna(0), true), Ok(Delivery::None));
    }

    #[test]
    fn invalid_injections_are_refused() {
        let mut m = setup(2);
        assert_eq!(m.inject(&ucna(2), true), Err(()));
        assert_eq!(
            m.inject(
                &KvmX86Mce {
                    status: MCI_STATUS_UC,
                    ..ucna(0)
                },
                true
            ),
            Err(())
        );
    }

    #[test]
    fn uncorrected_errors_raise_mc_or_shut_down() {
        let srar = KvmX86Mce {
            status: MCI_STATUS_VAL | MCI_STATUS_UC | MCI_STATUS_S | MCI_STATUS_AR,
            mcg_status: MCG_STATUS_MCIP,
            ..ucna(0)
        };
        let mut m = setup(2 | MCG_CTL_P);
        assert_eq!(
            m.inject(&srar, false),
            Ok(Delivery::TripleFault),
            "CR4.MCE clear"
        );
        assert_eq!(m.inject(&srar, true), Ok(Delivery::MachineCheck));
        assert_eq!(
            m.get_msr(MSR_IA32_MCG_STATUS, false),
            Some(Ok(MCG_STATUS_MCIP))
        );
        assert_eq!(
            m.inject(&srar, true),
            Ok(Delivery::TripleFault),
            "MCIP already set"
        );
        // Reporting disabled for the bank: recorded nowhere.
        let mut d = setup(2 | MCG_CTL_P);
        d.set_msr(MSR_IA32_MC0_CTL, 0, false, false)
            .unwrap()
            .unwrap();
        assert_eq!(d.inject(&srar, true), Ok(Delivery::None));
        assert_eq!(d.get_msr(MSR_IA32_MC0_CTL + 1, true), Some(Ok(0)));
    }

    #[test]
    fn corrected_errors_overwrite_corrected_ones_only() {
        let ce = KvmX86Mce {
            status: MCI_STATUS_VAL | 1,
            ..ucna(0)
        };
        let mut m = setup(1);
        assert_eq!(m.inject(&ce, true), Ok(Delivery::None));
        assert_eq!(m.inject(&ce, true), Ok(Delivery::None));
        assert_eq!(
            m.get_msr(MSR_IA32_MC0_CTL + 1, true),
            Some(Ok(MCI_STATUS_VAL | MCI_STATUS_OVER | 1))
        );
        m.set_msr(
            MSR_IA32_MC0_CTL + 1,
            MCI_STATUS_VAL | MCI_STATUS_UC,
            true,
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(m.inject(&ce, true), Ok(Delivery::None));
        assert_eq!(
            m.get_msr(MSR_IA32_MC0_CTL + 1, true),
            Some(Ok(MCI_STATUS_VAL | MCI_STATUS_UC | MCI_STATUS_OVER))
        );
    }

    #[test]
    fn the_ranges_are_the_c_kvms() {
        let m = Mce::new();
        for msr in [0, 1, 0x179, 0x17a, 0x17b, 0x280, 0x29f, 0x400, 0x47f] {
            assert!(m.get_msr(msr, true).is_some(), "{msr:#x}");
        }
        for msr in [0x17c, 0x2a0, 0x480, 0x4d0] {
            assert!(m.get_msr(msr, true).is_none(), "{msr:#x}");
        }
    }
}
