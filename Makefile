# SPDX-License-Identifier: GPL-2.0
# kvm-rs: the project's commands. The kernel module itself is built by Kbuild
# (scripts/build-module.sh); this Makefile drives setup, builds and tests.
#
#   make run                 the main job: set up, build, boot the test VM, load kvm-rs, show it working
#   make test                every test; closes with "N passed, N failed, N skipped"
#   make vmtest KVM=rs|c [EMU=qemu|bochs] TESTS="name ..." [CPU=...] [SMP=2] [SHOW_OUTPUT=1]
#   make baseline [KVM=c] [EMU=qemu|bochs]   all 85 upstream selftests -> tools/testing/selftests/kvm/baseline/
#   make crash-test          under Bochs: crash the host with guests running, the kexec crash kernel must boot
#   make host-test           cargo test of the hardware-independent files
#   make bench [EMU=qemu|bochs] [ROUNDS=N]   kvm-rs against the C KVM: exit cost, memory, start-up
#   make bench-smoke         the same with a few iterations, QEMU only: checks it works (CI)
#   make setup | build | kernel | module | selftests | initramfs

KVM ?= rs
# EMU: vmtest and baseline default to qemu, bench to all (QEMU and Bochs).
EMU ?=
TESTS ?=
CPU ?=
SMP ?= 2
SHOW_OUTPUT ?=
S := scripts

ROUNDS ?=

.PHONY: run test vmtest baseline crash-test host-test setup build kernel module selftests initramfs bench bench-smoke

run: setup build
	bash $(S)/vmtest.sh KVM=rs TESTS="kvm-rs/kvm_rs_demo" SHOW_OUTPUT=1

test:
	bash $(S)/test-all.sh

vmtest: build
	bash $(S)/vmtest.sh KVM="$(KVM)" EMU="$(or $(EMU),qemu)" TESTS="$(TESTS)" CPU="$(CPU)" SMP="$(SMP)" SHOW_OUTPUT="$(SHOW_OUTPUT)"

baseline: build
	bash $(S)/baseline.sh KVM="$(KVM)" EMU="$(or $(EMU),qemu)"

crash-test: build
	bash $(S)/crash-test.sh KVM="$(KVM)"

bench: build
	bash $(S)/bench.sh EMU="$(or $(EMU),all)" $(if $(ROUNDS),ROUNDS=$(ROUNDS))

bench-smoke: build
	bash $(S)/bench.sh SMOKE=1

host-test:
	cd tools/testing/kvm-rs-host && cargo test

setup:
	bash $(S)/setup-deps.sh

build:
	bash $(S)/build.sh

kernel:
	bash $(S)/build-kernel.sh

module:
	bash $(S)/build-module.sh

selftests:
	bash $(S)/build-selftests.sh

initramfs:
	bash $(S)/mkinitramfs.sh
