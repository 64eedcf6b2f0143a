/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kvm-rs: the SVM world switch (AMD APM vol. 2, 15.5 "VMRUN Instruction").
 *
 * The only code of the SVM backend that must be assembly: general-purpose
 * registers other than RAX and RSP are not in the VMCB, so they are switched
 * here around VMRUN, and the speculation barriers the kernel requires right
 * after a VM exit must come before the first RET.
 */
#include <linux/linkage.h>
#include <asm/asm.h>
#include <asm/nospec-branch.h>

/* Guest registers, in x86 register-number order (RAX=0 ... R15=15). */
#define REG(n)		((n) * 8)

/* Stack slots after the prologue below. */
#define SLOT_FAULT	0	/* set to 1 when an SVM instruction faulted */
#define SLOT_VMCB	8	/* @vmcb_pa */
#define SLOT_HOST	16	/* @host_save_pa */
#define SLOT_REGS	24	/* @regs */

.section .noinstr.text, "ax"

/*
 * u64 kvm_rs_svm_vcpu_run(u64 vmcb_pa, u64 host_save_pa, u64 *regs)
 *
 * Called with interrupts disabled. Clears GIF, then sets RFLAGS.IF: with
 * V_INTR_MASKING the host's IF decides whether physical interrupts exit the
 * guest (APM 15.21.1), and GIF=0 holds them, and NMIs, until the STGI at the
 * end, after interrupts are disabled again. (STI is not placed right before
 * VMRUN: its interrupt shadow would leak into the guest.) Saves the host's VMSAVE state (FS, GS, TR, LDTR, KernelGsBase,
 * STAR/LSTAR/CSTAR/SFMASK, SYSENTER MSRs) to @host_save_pa, loads the guest's
 * from the VMCB, runs the guest, and swaps them back. VMRUN itself saves and
 * restores the rest of the host state through MSR_VM_HSAVE_PA.
 *
 * Returns 0, or 1 if an SVM instruction faulted: that only happens when
 * EFER.SVME was cleared under us by the emergency (crash/kexec) path; the
 * world switch is then completed as far as possible instead of oopsing.
 */
SYM_FUNC_START(kvm_rs_svm_vcpu_run)
	push %rbp
	mov  %rsp, %rbp
	push %r15
	push %r14
	push %r13
	push %r12
	push %rbx
	push %rdx		/* SLOT_REGS */
	push %rsi		/* SLOT_HOST */
	push %rdi		/* SLOT_VMCB */
	push $0			/* SLOT_FAULT */

11:	clgi
12:
	sti

	mov %rsi, %rax
1:	vmsave %rax
2:
	mov %rdi, %rax
3:	vmload %rax
4:
	/* Load the guest's registers; RDI last, as it is the base. */
	mov %rdx, %rdi
	mov REG(1)(%rdi),  %rcx
	mov REG(2)(%rdi),  %rdx
	mov REG(3)(%rdi),  %rbx
	mov REG(5)(%rdi),  %rbp
	mov REG(6)(%rdi),  %rsi
	mov REG(8)(%rdi),  %r8
	mov REG(9)(%rdi),  %r9
	mov REG(10)(%rdi), %r10
	mov REG(11)(%rdi), %r11
	mov REG(12)(%rdi), %r12
	mov REG(13)(%rdi), %r13
	mov REG(14)(%rdi), %r14
	mov REG(15)(%rdi), %r15
	mov REG(7)(%rdi),  %rdi
	mov SLOT_VMCB(%rsp), %rax

	/* MDS and similar: flush CPU buffers before entering the guest. */
	VM_CLEAR_CPU_BUFFERS

5:	vmrun %rax
6:
	/* Host RSP and RAX (the VMCB address) are back; save the guest's. */
	mov SLOT_REGS(%rsp), %rax
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

	mov SLOT_VMCB(%rsp), %rax
7:	vmsave %rax
8:
	/* The host's GS base (per-CPU data) and syscall MSRs come back here. */
	mov SLOT_HOST(%rsp), %rax
9:	vmload %rax
10:
	cli
13:	stgi
14:
	/* Stuff the RSB before the first RET after the guest ran. */
	FILL_RETURN_BUFFER %rax, RSB_CLEAR_LOOPS, X86_FEATURE_RSB_VMEXIT

	/* RETBleed/SRSO: untrain return prediction before any RET. */
	UNTRAIN_RET_VM

	/*
	 * Clear every register that held a guest value, so that none reaches
	 * speculative execution in the host (the pops below reload some of
	 * them, but a cache miss there could leave the guest value in flight).
	 */
	xor %ecx, %ecx
	xor %edx, %edx
	xor %ebx, %ebx
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

	pop %rax		/* SLOT_FAULT: the return value */
	add $24, %rsp		/* SLOT_VMCB, SLOT_HOST, SLOT_REGS */
	pop %rbx
	pop %r12
	pop %r13
	pop %r14
	pop %r15
	pop %rbp
	RET

	/* Exception fixups: note the fault and go on after the instruction. */
100:	movq $1, SLOT_FAULT(%rsp)
	jmp 2b
300:	movq $1, SLOT_FAULT(%rsp)
	jmp 4b
500:	movq $1, SLOT_FAULT(%rsp)
	jmp 6b
700:	movq $1, SLOT_FAULT(%rsp)
	jmp 8b
900:	movq $1, SLOT_FAULT(%rsp)
	jmp 10b
1100:	movq $1, SLOT_FAULT(%rsp)
	jmp 12b
1300:	movq $1, SLOT_FAULT(%rsp)
	jmp 14b

	_ASM_EXTABLE(1b, 100b)
	_ASM_EXTABLE(3b, 300b)
	_ASM_EXTABLE(5b, 500b)
	_ASM_EXTABLE(7b, 700b)
	_ASM_EXTABLE(9b, 900b)
	_ASM_EXTABLE(11b, 1100b)
	_ASM_EXTABLE(13b, 1300b)
SYM_FUNC_END(kvm_rs_svm_vcpu_run)
