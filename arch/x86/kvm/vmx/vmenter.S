/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kvm-rs: the VMX instructions and the VMX world switch (Intel SDM vol. 3C,
 * chapter 31 "VMX Instruction Reference", and chapters 27/28 on VM entries
 * and VM exits).
 *
 * Every VMX instruction sits here, under an exception-table fixup: VMXON
 * faults when VMX is disabled or the CPU state does not allow it, and every
 * VMX instruction faults (#UD) once the crash/kexec path has left VMX
 * operation under a running vCPU. A fault is reported, never an oops.
 *
 * Return values of every function here:
 *   0  success (for the world switch: a VM exit happened)
 *   1  VMfailInvalid (CF=1: no current VMCS, or a bad VMXON/VMCS pointer)
 *   2  VMfailValid (ZF=1: the VM-instruction error field says why)
 *   3  the instruction faulted
 */
#include <linux/linkage.h>
#include <asm/asm.h>
#include <asm/msr-index.h>
#include <asm/nospec-branch.h>
#include <asm/percpu.h>
#include <asm/segment.h>
#include <asm/unwind_hints.h>

#define VMX_OK			0
#define VMX_FAIL_INVALID	1
#define VMX_FAIL_VALID		2
#define VMX_FAULT		3

/* VMCS encoding of the host RSP field (SDM appendix B.4.4). */
#define HOST_RSP_FIELD		0x6c14

/* struct VmxRegs in vmx_ops.rs: 16 GPRs in x86 order (RSP unused: the VMCS
 * switches it), then CR2 (not switched by VM entries and exits). */
#define REG(n)			((n) * 8)
#define REG_CR2			(16 * 8)

/* After VMXON/VMXOFF/VMCLEAR/VMPTRLD/VMREAD/VMWRITE/INVEPT/INVVPID: turn
 * RFLAGS into a return value. */
.macro VMX_STATUS
	jc 801f
	jz 802f
	xor %eax, %eax
	RET
801:	mov $VMX_FAIL_INVALID, %eax
	RET
802:	mov $VMX_FAIL_VALID, %eax
	RET
.endm

.section .noinstr.text, "ax"

/* u64 kvm_rs_vmxon(const u64 *vmxon_region_pa) */
SYM_FUNC_START(kvm_rs_vmxon)
1:	vmxon (%rdi)
	VMX_STATUS
2:	mov $VMX_FAULT, %eax
	RET
	_ASM_EXTABLE(1b, 2b)
SYM_FUNC_END(kvm_rs_vmxon)

/* u64 kvm_rs_vmxoff(void) */
SYM_FUNC_START(kvm_rs_vmxoff)
1:	vmxoff
	VMX_STATUS
2:	mov $VMX_FAULT, %eax
	RET
	_ASM_EXTABLE(1b, 2b)
SYM_FUNC_END(kvm_rs_vmxoff)

/* u64 kvm_rs_vmclear(const u64 *vmcs_pa) */
SYM_FUNC_START(kvm_rs_vmclear)
1:	vmclear (%rdi)
	VMX_STATUS
2:	mov $VMX_FAULT, %eax
	RET
	_ASM_EXTABLE(1b, 2b)
SYM_FUNC_END(kvm_rs_vmclear)

/* u64 kvm_rs_vmptrld(const u64 *vmcs_pa) */
SYM_FUNC_START(kvm_rs_vmptrld)
1:	vmptrld (%rdi)
	VMX_STATUS
2:	mov $VMX_FAULT, %eax
	RET
	_ASM_EXTABLE(1b, 2b)
SYM_FUNC_END(kvm_rs_vmptrld)

/* u64 kvm_rs_vmread(u64 field, u64 *value): *value is written on success only. */
SYM_FUNC_START(kvm_rs_vmread)
1:	vmread %rdi, %rdx
	jbe 3f
	mov %rdx, (%rsi)
	xor %eax, %eax
	RET
3:	VMX_STATUS
2:	mov $VMX_FAULT, %eax
	RET
	_ASM_EXTABLE(1b, 2b)
SYM_FUNC_END(kvm_rs_vmread)

/*
 * u64 kvm_rs_vmread_many(const u32 *fields, u64 *values, u64 n): VMREADs
 * fields[0..n] into values[0..n] in one call (the exit path reads some fifty
 * fields; one call each cost more than the reads). Returns how many were
 * read: n on success, else the index of the field that failed or faulted
 * (values from there on are not written).
 */
SYM_FUNC_START(kvm_rs_vmread_many)
	/*
	 * Five instructions a field: both arrays addressed from their ends
	 * with a negative index counting up to zero, and VMREAD storing
	 * straight into values[] (it writes nothing when it fails).
	 */
	lea (%rdi,%rdx,4), %rdi
	lea (%rsi,%rdx,8), %rsi
	mov %rdx, %rax
	neg %rax
	jz 4f
1:	mov (%rdi,%rax,4), %ecx
3:	vmread %rcx, (%rsi,%rax,8)
	jbe 4f
	inc %rax
	jnz 1b
	/* rax is the index from the end (0 when all were read): from the start. */
4:	add %rdx, %rax
	RET
	_ASM_EXTABLE(3b, 4b)
SYM_FUNC_END(kvm_rs_vmread_many)

/*
 * u64 kvm_rs_vmwrite_many(const u32 *fields, const u64 *values, u64 n): the
 * same for VMWRITE. Returns n on success, else the index of the field that
 * failed or faulted (fields from there on are not written).
 */
SYM_FUNC_START(kvm_rs_vmwrite_many)
	xor %eax, %eax
	test %rdx, %rdx
	jz 4f
1:	mov (%rdi,%rax,4), %ecx
	mov (%rsi,%rax,8), %r8
3:	vmwrite %r8, %rcx
	jbe 4f
	inc %rax
	cmp %rdx, %rax
	jb 1b
4:	RET
	_ASM_EXTABLE(3b, 4b)
SYM_FUNC_END(kvm_rs_vmwrite_many)

/* u64 kvm_rs_vmwrite(u64 field, u64 value) */
SYM_FUNC_START(kvm_rs_vmwrite)
1:	vmwrite %rsi, %rdi
	VMX_STATUS
2:	mov $VMX_FAULT, %eax
	RET
	_ASM_EXTABLE(1b, 2b)
SYM_FUNC_END(kvm_rs_vmwrite)

/* u64 kvm_rs_invept(u64 type, const u64 desc[2]) */
SYM_FUNC_START(kvm_rs_invept)
1:	invept (%rsi), %rdi
	VMX_STATUS
2:	mov $VMX_FAULT, %eax
	RET
	_ASM_EXTABLE(1b, 2b)
SYM_FUNC_END(kvm_rs_invept)

/* u64 kvm_rs_invvpid(u64 type, const u64 desc[2]) */
SYM_FUNC_START(kvm_rs_invvpid)
1:	invvpid (%rsi), %rdi
	VMX_STATUS
2:	mov $VMX_FAULT, %eax
	RET
	_ASM_EXTABLE(1b, 2b)
SYM_FUNC_END(kvm_rs_invvpid)

/*
 * u64 kvm_rs_vmx_vcpu_run(struct VmxRegs *regs, u64 flags)
 *
 * flags bit 0: the VMCS was launched, use VMRESUME (else VMLAUNCH).
 *
 * Called with interrupts disabled and the vCPU's VMCS current, its host-state
 * area filled in for this CPU except HOST_RSP, written here: the VM exit
 * comes back to kvm_rs_vmx_vmexit below with RSP pointing at the frame this
 * function built, whatever the guest did.
 *
 * Speculation (the kernel's rules for VM exits, as in the C KVM's
 * vmx/vmenter.S): CPU buffers are cleared (VERW) right before entry when the
 * kernel asks for it; after the exit every register that held a guest value
 * is cleared, the RSB is filled before the first RET when the kernel asks
 * for it, SPEC_CTRL is rewritten when the kernel uses legacy IBRS (the guest
 * runs with the host's SPEC_CTRL, it is never offered to guests: rewriting
 * it is what restores IBRS protection after a less privileged predictor
 * mode), and the branch history is cleared when BHI mitigation requires it.
 */
SYM_FUNC_START(kvm_rs_vmx_vcpu_run)
	push %rbp
	mov  %rsp, %rbp
	push %r15
	push %r14
	push %r13
	push %r12
	push %rbx
	/* @regs: (%rsp) from here on, also after the VM exit. */
	push %rdi

	mov %esi, %ebx

	/* HOST_RSP: this frame. */
	mov $HOST_RSP_FIELD, %eax
10:	vmwrite %rsp, %rax
	jbe .Lvmfail

	/* Guest CR2: VM entries and exits do not switch it. */
	mov REG_CR2(%rdi), %rax
	mov %cr2, %rdx
	cmp %rax, %rdx
	je 1f
	mov %rax, %cr2
1:
	mov %rdi, %rax

	/* CF = "launched"; nothing below changes CF before the jump. */
	bt $0, %ebx

	mov REG(1)(%rax),  %rcx
	mov REG(2)(%rax),  %rdx
	mov REG(3)(%rax),  %rbx
	mov REG(5)(%rax),  %rbp
	mov REG(6)(%rax),  %rsi
	mov REG(7)(%rax),  %rdi
	mov REG(8)(%rax),  %r8
	mov REG(9)(%rax),  %r9
	mov REG(10)(%rax), %r10
	mov REG(11)(%rax), %r11
	mov REG(12)(%rax), %r12
	mov REG(13)(%rax), %r13
	mov REG(14)(%rax), %r14
	mov REG(15)(%rax), %r15
	/* Guest RAX last: it was the base. */
	mov REG(0)(%rax),  %rax

	/* MDS and similar: clear CPU buffers (VERW changes ZF only). */
	CLEAR_CPU_BUFFERS

	jnc .Llaunch

	/* The VM exit continues at kvm_rs_vmx_vmexit, not after the instruction. */
	UNWIND_HINT_SAVE
.Lresume:
	vmresume
	jmp .Lvmfail

.Llaunch:
	vmlaunch
	jmp .Lvmfail

	_ASM_EXTABLE(.Lresume, .Lfault)
	_ASM_EXTABLE(.Llaunch, .Lfault)
	_ASM_EXTABLE(10b, .Lfault)

SYM_INNER_LABEL_ALIGN(kvm_rs_vmx_vmexit, SYM_L_GLOBAL)
	UNWIND_HINT_RESTORE
	ENDBR

	/* RSP is this frame again (HOST_RSP); save the guest's registers. */
	push %rax
	mov 8(%rsp), %rax
	pop REG(0)(%rax)
	mov %rcx, REG(1)(%rax)
	mov %rdx, REG(2)(%rax)
	mov %rbx, REG(3)(%rax)
	mov %rbp, REG(5)(%rax)
	mov %rsi, REG(6)(%rax)
	mov %rdi, REG(7)(%rax)
	mov %r8,  REG(8)(%rax)
	mov %r9,  REG(9)(%rax)
	mov %r10, REG(10)(%rax)
	mov %r11, REG(11)(%rax)
	mov %r12, REG(12)(%rax)
	mov %r13, REG(13)(%rax)
	mov %r14, REG(14)(%rax)
	mov %r15, REG(15)(%rax)
	mov %cr2, %rcx
	mov %rcx, REG_CR2(%rax)

	xor %ebx, %ebx		/* VMX_OK */

.Lclear_regs:
	pop %rax		/* @regs */

	/*
	 * No guest value may reach speculative execution in the host: clear
	 * every register but RSP (restored by the exit) and RBX (the return
	 * value), including those reloaded from the stack below.
	 */
	xor %eax, %eax
	xor %ecx, %ecx
	xor %edx, %edx
	xor %ebp, %ebp
	xor %esi, %esi
	xor %edi, %edi
	xor %r8d,  %r8d
	xor %r9d,  %r9d
	xor %r10d, %r10d
	xor %r11d, %r11d
	xor %r12d, %r12d
	xor %r13d, %r13d
	xor %r14d, %r14d
	xor %r15d, %r15d

	/* Before the first unbalanced RET: fill the RSB (retpoline, IBRS). */
	FILL_RETURN_BUFFER %rcx, RSB_CLEAR_LOOPS, X86_FEATURE_RSB_VMEXIT, X86_FEATURE_RSB_VMEXIT_LITE

	/* Legacy IBRS protects only once written after the guest ran. */
	ALTERNATIVE "jmp 2f", "", X86_FEATURE_KERNEL_IBRS
	mov $MSR_IA32_SPEC_CTRL, %ecx
	movl PER_CPU_VAR(x86_spec_ctrl_current), %eax
	movl PER_CPU_VAR(x86_spec_ctrl_current + 4), %edx
	wrmsr
2:
	/* No speculation past the SPEC_CTRL decision (C: barrier_nospec()). */
	ALTERNATIVE "", "lfence", X86_FEATURE_MSR_SPEC_CTRL

	CLEAR_BRANCH_HISTORY_VMEXIT

	mov %rbx, %rax
	pop %rbx
	pop %r12
	pop %r13
	pop %r14
	pop %r15
	pop %rbp
	RET

.Lfault:
	mov $VMX_FAULT, %ebx
	jmp .Lclear_regs

.Lvmfail:
	/* Nothing changed RFLAGS since the failed instruction. */
	mov $VMX_FAIL_VALID, %ebx
	jnc .Lclear_regs
	mov $VMX_FAIL_INVALID, %ebx
	jmp .Lclear_regs
SYM_FUNC_END(kvm_rs_vmx_vcpu_run)

/*
 * void kvm_rs_vmx_do_nmi(void)
 *
 * An NMI that arrives in VMX non-root operation causes a VM exit instead of
 * being delivered (NMI exiting), so the host would never see it: call the
 * kernel's NMI entry for this case (asm_exc_nmi_kvm_vmx) with the interrupt
 * frame the CPU would have pushed, interrupts still disabled. The handler
 * returns with IRET.
 */
SYM_FUNC_START(kvm_rs_vmx_do_nmi)
	push %rbp
	mov %rsp, %rbp
	/* A hardware interrupt frame: aligned stack, SS, RSP, RFLAGS, CS. */
	and $-16, %rsp
	push $__KERNEL_DS
	push %rbp
	pushf
	push $__KERNEL_CS
	call asm_exc_nmi_kvm_vmx
	/* IRET restored RSP already; tell objtool. */
	mov %rbp, %rsp
	pop %rbp
	RET
SYM_FUNC_END(kvm_rs_vmx_do_nmi)
