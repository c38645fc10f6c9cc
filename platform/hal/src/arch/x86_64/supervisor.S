/*
 * The Kiln supervisor: the only code of a guest that runs at CPL0.
 *
 * Why it is assembly and tiny: on the KVM of these machines (kvm_pvm) guest
 * CPL0 code runs through KVM's instruction emulator (~1 us per instruction)
 * and that emulator cannot execute SSE, which compiled Rust emits freely.
 * So CPL0 holds only what must be privileged (docs/adr/0002):
 *
 *   - the PVH entry: 32-bit protected mode -> long mode on static page
 *     tables (built by the assembler and linker, zero CPL0 loops), GDT,
 *     TSS with an I/O bitmap, IDT, syscall MSRs, SSE on, legacy PIC masked,
 *     x2APIC on when CPUID offers it, then iretq to `kiln_rust_entry` at
 *     CPL3 with rdi = PVH start info;
 *   - supervisor calls (`int3` with rax in kiln_abi::sc): exit, halt,
 *     map, unmap (W^X enforced, supervisor pages refused), resume,
 *     x2APIC register writes, protect (W^X for the image); every call
 *     preserves all registers but rax (result), rcx and r11;
 *   - exception and interrupt entry on the TSS stack, upcalled to the CPL3
 *     handler `kiln_upcall_entry` with the interrupted context in the
 *     per-CPU frame `kiln_upcall_frame` (kiln_abi::upcall);
 *   - last-resort reports (fault inside the upcall handler, fault in the
 *     supervisor) printed on COM1 before exiting.
 *
 * Memory: everything in .supervisor and .supervisor.bss is mapped
 * supervisor-only (PT0 entries below); the linker script places it at
 * 1 MiB and checks it fits in SUP_PAGES pages.
 *
 * Selectors: 0x08 kernel code, 0x10 kernel data, 0x18 (sysret base),
 * 0x20 user data, 0x28 user code, 0x30 TSS. One CPU: the scratch slots and
 * the upcall frame are single per-CPU slots (an SMP port makes them per-CPU
 * via GS, see docs/architecture.md).
 */

.set KCODE, 0x08
.set KDATA, 0x10
.set UDATA, 0x23
.set UCODE, 0x2b
.set TSS_SEL, 0x30

.set SUP_BASE_ADDR, 0x100000

/* ---------------------------------------------------------------- note */
.pushsection .note.Xen, "a", @note
    .balign 4
    .long 4                 /* name size: "Xen\0" */
    .long 4                 /* descriptor size */
    .long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .long kiln_pvh_start
    .balign 4
.popsection

/* ----------------------------------------------------------- supervisor */
.pushsection .supervisor, "awx", @progbits
.balign 4096
.globl kiln_sup_base
kiln_sup_base:

/* Page tables. PML4[0] -> PDPT; PDPT[0] -> PD (identity map of the first
 * GiB), PDPT[1] -> the map window's PD (filled at boot). PD[0] -> PT0 (4 KiB
 * pages for the first 2 MiB); PD[1..512] are 2 MiB user pages. */
pml4:
    .quad pdpt + 0x7
    .fill 511, 8, 0
pdpt:
    .quad pd + 0x7
    .quad window_pd + 0x7
    .fill 510, 8, 0
pd:
    .quad pt0 + 0x7
    .set i, 1
    .rept 511
    .quad (i << 21) | 0x87 | (1 << 63)  /* P | RW | US | PS | NX: data only */
    .set i, i + 1
    .endr
pt0:
    .set i, 0
    .rept 512
    .if i == 0
    .quad 0                         /* null page: not mapped */
    .elseif (i >= (SUP_BASE_ADDR >> 12)) && (i < (SUP_BASE_ADDR >> 12) + {SUP_PAGES})
    .quad (i << 12) | 0x3           /* supervisor: P | RW, no US */
    .elseif i < (SUP_BASE_ADDR >> 12)
    .quad (i << 12) | 0x7 | (1 << 63)   /* low memory: P | RW | US | NX */
    .else
    .quad (i << 12) | 0x7           /* the image: RWX until the runtime's protect() */
    .endif
    .set i, i + 1
    .endr

/* ------------------------------------------------------------ PVH entry */
.code32
.globl kiln_pvh_start
kiln_pvh_start:
    cld
    movl %ebx, %edi                 /* PVH start info, kept for Rust */
    movl $pml4, %eax
    movl %eax, %cr3
    movl %cr4, %eax
    orl $((1 << 5) | (1 << 9) | (1 << 10)), %eax   /* PAE, OSFXSR, OSXMMEXCPT */
    movl %eax, %cr4
    movl $0xc0000080, %ecx          /* EFER */
    rdmsr
    orl $((1 << 0) | (1 << 8) | (1 << 11)), %eax   /* SCE, LME, NXE */
    wrmsr
    movl %cr0, %eax
    andl $~((1 << 2) | (1 << 3)), %eax             /* no EM, no TS */
    orl $((1 << 31) | (1 << 16) | (1 << 1) | 1), %eax  /* PG, WP, MP, PE */
    movl %eax, %cr0
    lgdt gdt_ptr
    ljmpl $KCODE, $long_entry

.code64
long_entry:
    movq $kstack_top, %rsp          /* PVH gives no stack */
    movw $KDATA, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorl %eax, %eax
    movw %ax, %fs
    movw %ax, %gs
    movw $TSS_SEL, %ax
    ltr %ax
    lidt idt_ptr
    movq $window_pt + 0x7, %rax     /* window PD[0] -> window PT */
    movq %rax, window_pd
    movb $0xff, %al                 /* mask both legacy PICs */
    outb %al, $0x21
    outb %al, $0xa1
    movl $1, %eax                   /* x2APIC on when offered */
    cpuid
    btl $21, %ecx
    jnc 1f
    movl $0x1b, %ecx
    rdmsr
    orl $0xc00, %eax                /* global enable + x2APIC mode */
    wrmsr
    movb $1, x2apic_on
1:
    movl $0xc0000081, %ecx          /* STAR: sysret base 0x18, syscall 0x08 */
    xorl %eax, %eax
    movl $((0x18 << 16) | KCODE), %edx
    wrmsr
    movl $0xc0000082, %ecx          /* LSTAR: Linux syscalls, -ENOSYS for now */
    movl $kiln_lstar_stub, %eax
    xorl %edx, %edx
    wrmsr
    movl $0xc0000084, %ecx          /* FMASK: TF IF DF IOPL NT AC */
    movl $0x47700, %eax
    wrmsr
    pushq $UDATA
    pushq $(kiln_boot_stack_top - 8)
    pushq $0x202                    /* IF */
    pushq $UCODE
    pushq $kiln_rust_entry
    iretq                           /* rdi = start info */

/* ------------------------------------------------------ supervisor calls */
/* Entered from isr_common for `int3` from CPL3 with rax in the supervisor-
 * call range (docs/adr/0002: on kvm_pvm `syscall` does not leave CPL3, so
 * the DPL-3 breakpoint gate is the way in). The CPU's iret frame is on the
 * kernel stack below the vector and error words. */
sc_entry:
    addq $16, %rsp                  /* drop vector and error code */
    movq (%rsp), %rcx               /* the caller's context, for halt() */
    movq %rcx, sc_user_rip
    movq 16(%rsp), %rcx
    movq %rcx, sc_user_rflags
    movq 24(%rsp), %rcx
    movq %rcx, sc_user_rsp
    subq ${SC_BASE}, %rax
    jmp *sc_table(, %rax, 8)

sc_return:                          /* rax = result */
    iretq

sc_einval:
    movq $-{EINVAL}, %rax
    jmp sc_return
sc_eperm:
    movq $-{EPERM}, %rax
    jmp sc_return

/* exit(status) */
sc_exit:
    movl %edi, %eax
    movw ${EXIT_PORT}, %dx
    outl %eax, %dx
2:  cli                             /* no exit device: stop here */
    hlt
    jmp 2b

/* halt(): an interrupt taken here is redirected to the caller's context.
 * A wake-up posted by an upcall handler since the caller last cleared
 * kiln_wake_pending (kiln_hal::irq::post_wake) makes it return at once:
 * an interrupt between the caller's last check and this call is not lost. */
sc_halt:
    cmpb $0, kiln_wake_pending
    jne halt_after
    sti
halt_window:
    hlt
halt_after:
    cli
    xorl %eax, %eax
    jmp sc_return

/* halt_for(value, msr): arm the APIC timer — initial count (msr 0x838)
 * or TSC deadline (msr 0x6e0) — then halt, atomically (IF is clear since
 * the gate; sti's shadow covers the hlt). rdx is preserved. */
sc_halt_for:
    movq ${XAPIC_TIMER_INITIAL_VA}, %rax
    cmpq %rax, %rsi                 /* xAPIC: the count register, mapped */
    jne 21f
    movl %edi, (%rsi)               /* a fault here is the caller's bad map */
    jmp sc_halt
21: cmpb $0, x2apic_on
    je sc_enodev
    cmpq $0x838, %rsi
    je 20f
    cmpq $0x6e0, %rsi
    jne sc_einval
20: pushq %rdx
    movl %esi, %ecx
    movl %edi, %eax
    movq %rdi, %rdx
    shrq $32, %rdx
    wrmsr
    popq %rdx
    jmp sc_halt

/* Checks that rdi is a page-aligned address in the map window; leaves the
 * page index in rax and the PTE address in rcx. Jumps to sc_einval if not. */
.macro window_index
    movq %rdi, %rax
    subq ${MAP_WINDOW_BASE}, %rax
    cmpq ${MAP_WINDOW_BYTES}, %rax
    jae sc_einval
    testq $0xfff, %rdi
    jnz sc_einval
    shrq $12, %rax
    leaq window_pt(, %rax, 8), %rcx
.endm

/* map(vaddr, paddr, flags) */
sc_map:
    testq $~3, %rdx                 /* unknown flags */
    jnz sc_einval
    cmpq $3, %rdx                   /* W^X: never both */
    je sc_eperm
    testq $0xfff, %rsi
    jnz sc_einval
    movq %rsi, %rax
    shrq $39, %rax                  /* beyond 512 GiB of physical space */
    jnz sc_einval
    movq %rsi, %rax                 /* the supervisor's own pages */
    subq $SUP_BASE_ADDR, %rax
    cmpq $({SUP_PAGES} << 12), %rax
    jb sc_eperm
    window_index
    testq $1, (%rcx)
    jnz 3f
    movq %rsi, %r11
    orq $0x5, %r11                  /* P | US */
    testq ${MAP_WRITE}, %rdx
    jz 4f
    orq $0x2, %r11                  /* RW */
4:  testq ${MAP_EXEC}, %rdx
    jnz 5f
    btsq $63, %r11                  /* NX */
5:  movq %r11, (%rcx)
    xorl %eax, %eax
    jmp sc_return
3:  movq $-{EEXIST}, %rax
    jmp sc_return

/* unmap(vaddr) */
sc_unmap:
    window_index
    testq $1, (%rcx)
    jz 6f
    movq $0, (%rcx)
    invlpg (%rdi)
    xorl %eax, %eax
    jmp sc_return
6:  movq $-{ENOENT}, %rax
    jmp sc_return

/* apic_write(msr, value) */
sc_apic_write:
    cmpb $0, x2apic_on
    je sc_enodev
    cmpq $0x6e0, %rdi               /* IA32_TSC_DEADLINE: 64 bits */
    je 19f
    /* Only the registers the runtime writes, 32-bit values: read-only or
       reserved MSRs (and the ICR) would #GP or INIT us at CPL0. */
    movq %rsi, %rax
    shrq $32, %rax
    jnz sc_einval
    cmpq $0x808, %rdi               /* TPR */
    je 19f
    cmpq $0x80f, %rdi               /* SVR */
    je 19f
    cmpq $0x832, %rdi               /* LVT timer */
    je 19f
    cmpq $0x838, %rdi               /* timer initial count */
    je 19f
    cmpq $0x83e, %rdi               /* timer divide configuration */
    jne sc_einval
19: pushq %rdx                      /* wrmsr takes edx; callers keep rdx */
    movl %edi, %ecx
    movl %esi, %eax
    movq %rsi, %rdx
    shrq $32, %rdx
    wrmsr
    popq %rdx
    xorl %eax, %eax
    jmp sc_return
sc_enodev:
    movq $-{ENODEV}, %rax           /* no x2APIC */
    jmp sc_return

/* protect(vaddr, pages, flags): set the access of identity-mapped pages
 * in the first 2 MiB (PT0), outside the supervisor: flags W (1), X (2),
 * NONE (4, unmapped: guard pages); W and X together are refused. */
sc_protect:
    testq $~7, %rdx
    jnz sc_einval
    cmpq $3, %rdx                   /* W^X */
    je sc_eperm
    testq $0xfff, %rdi
    jnz sc_einval
    testq %rsi, %rsi
    jz sc_einval
    cmpq $0x200, %rsi               /* at most PT0's 512 pages */
    ja sc_einval
    movq %rsi, %rcx
    shlq $12, %rcx
    addq %rdi, %rcx                 /* rcx = end */
    jc sc_einval                    /* wrapped past 2^64 */
    cmpq $0x200000, %rcx
    ja sc_einval
    cmpq $0x1000, %rdi              /* the null page stays unmapped */
    jb sc_eperm
    cmpq $SUP_BASE_ADDR + ({SUP_PAGES} << 12), %rdi
    jae 13f                         /* starts above the supervisor: fine */
    cmpq $SUP_BASE_ADDR, %rcx
    ja sc_eperm                     /* ends inside or above it: overlap */
13: pushq %rdi                      /* the loop walks these; callers keep them */
    pushq %rsi
    movq %rdi, %r11                 /* build the PTE for the first page */
    orq $0x5, %r11                  /* P | US */
    testq $4, %rdx
    jz 14f
    xorl %r11d, %r11d               /* NONE: not present */
    jmp 16f
14: testq $1, %rdx
    jz 15f
    orq $0x2, %r11                  /* RW */
15: testq $2, %rdx
    jnz 16f
    btsq $63, %r11                  /* NX */
16: movq %rdi, %rax
    shrq $12, %rax
    leaq pt0(, %rax, 8), %rax       /* first PTE */
17: movq %r11, (%rax)
    invlpg (%rdi)
    addq $8, %rax
    addq $0x1000, %rdi
    testq $1, %r11                  /* not-present PTEs carry no address */
    jz 18f
    addq $0x1000, %r11
18: decq %rsi
    jnz 17b
    popq %rsi
    popq %rdi
    xorl %eax, %eax
    jmp sc_return

/* fault_test(): a fault at CPL0, to exercise supervisor_fault */
sc_fault_test:
    ud2

/* resume(): reload the upcall frame and return to it */
sc_resume:
    movq $kiln_upcall_frame, %rax
    movq {OFF_RIP}(%rax), %rcx      /* a non-canonical rip would fault in iretq */
    movq %rcx, %r11
    shlq $16, %r11
    sarq $16, %r11
    cmpq %rcx, %r11
    jne sc_einval                   /* (returns to the caller's iret frame) */
    movq $kstack_top, %rsp          /* the caller's frame is abandoned */
    pushq $UDATA
    pushq {OFF_RSP}(%rax)
    movq {OFF_RFLAGS}(%rax), %rcx
    andq $0x40cd5, %rcx             /* CF PF AF ZF SF DF OF AC only */
    orq $0x202, %rcx                /* IF */
    pushq %rcx
    pushq $UCODE
    pushq {OFF_RIP}(%rax)
    movb $0, upcall_active
    movq {OFF_RBX}(%rax), %rbx
    movq {OFF_RCX}(%rax), %rcx
    movq {OFF_RDX}(%rax), %rdx
    movq {OFF_RSI}(%rax), %rsi
    movq {OFF_RDI}(%rax), %rdi
    movq {OFF_RBP}(%rax), %rbp
    movq {OFF_R8}(%rax), %r8
    movq {OFF_R9}(%rax), %r9
    movq {OFF_R10}(%rax), %r10
    movq {OFF_R11}(%rax), %r11
    movq {OFF_R12}(%rax), %r12
    movq {OFF_R13}(%rax), %r13
    movq {OFF_R14}(%rax), %r14
    movq {OFF_R15}(%rax), %r15
    movq {OFF_RAX}(%rax), %rax
    iretq

/* ------------------------------------------------- exceptions, interrupts */
/* One 16-byte stub per vector: push a zero error code where the CPU pushes
 * none, push the vector, join the common path. */
.balign 16
isr_stubs:
    .set v, 0
    .rept {VECTORS}
    .balign 16
    .if (v == 8) || ((v >= 10) && (v <= 14)) || (v == 17) || (v == 21) || (v == 29) || (v == 30)
    .else
    pushq $0
    .endif
    pushq $v
    jmp isr_common
    .set v, v + 1
    .endr

/* stack: vector, error, rip, cs, rflags, rsp, ss */
isr_common:
    cmpq $3, (%rsp)                 /* int3 from CPL3 with a call number: */
    jne 11f                         /* a supervisor call */
    testb $3, 24(%rsp)
    jz 11f
    cmpq ${SC_BASE}, %rax
    jb 11f
    cmpq ${SC_END}, %rax
    jb sc_entry
11: testb $3, 24(%rsp)
    jnz from_user
    cmpq $halt_after, 16(%rsp)
    je from_halt
    cmpq $halt_window, 16(%rsp)
    jne supervisor_fault
from_halt:
    /* The interrupt woke a halt() call: deliver it as if it had hit the
     * caller right after its syscall, which then returns 0. */
    movq sc_user_rip, %rcx
    movq %rcx, 16(%rsp)
    movq $UCODE, 24(%rsp)
    movq sc_user_rflags, %r11
    movq %r11, 32(%rsp)
    movq sc_user_rsp, %rax
    movq %rax, 40(%rsp)
    movq $UDATA, 48(%rsp)
    xorl %eax, %eax
from_user:
    cmpb $0, upcall_active
    jne nested_fault
    movb $1, upcall_active
    movq %rax, kiln_upcall_frame + {OFF_RAX}
    movq %rbx, kiln_upcall_frame + {OFF_RBX}
    movq %rcx, kiln_upcall_frame + {OFF_RCX}
    movq %rdx, kiln_upcall_frame + {OFF_RDX}
    movq %rsi, kiln_upcall_frame + {OFF_RSI}
    movq %rdi, kiln_upcall_frame + {OFF_RDI}
    movq %rbp, kiln_upcall_frame + {OFF_RBP}
    movq %r8, kiln_upcall_frame + {OFF_R8}
    movq %r9, kiln_upcall_frame + {OFF_R9}
    movq %r10, kiln_upcall_frame + {OFF_R10}
    movq %r11, kiln_upcall_frame + {OFF_R11}
    movq %r12, kiln_upcall_frame + {OFF_R12}
    movq %r13, kiln_upcall_frame + {OFF_R13}
    movq %r14, kiln_upcall_frame + {OFF_R14}
    movq %r15, kiln_upcall_frame + {OFF_R15}
    popq %rax
    movq %rax, kiln_upcall_frame + {OFF_VECTOR}
    popq kiln_upcall_frame + {OFF_ERROR_CODE}
    popq kiln_upcall_frame + {OFF_RIP}
    popq kiln_upcall_frame + {OFF_CS}
    popq kiln_upcall_frame + {OFF_RFLAGS}
    popq kiln_upcall_frame + {OFF_RSP}
    popq kiln_upcall_frame + {OFF_SS}
    xorl %edx, %edx
    cmpq $14, %rax
    jne 7f
    movq %cr2, %rdx
7:  movq %rdx, kiln_upcall_frame + {OFF_CR2}
    cmpq $32, %rax                  /* interrupts: acknowledge the APIC */
    jb 8f
    cmpb $0, x2apic_on
    je 8f
    movl $0x80b, %ecx               /* x2APIC EOI */
    xorl %eax, %eax
    xorl %edx, %edx
    wrmsr
8:  pushq $UDATA
    pushq $(kiln_upcall_stack_top - 8)
    pushq $0x002                    /* interrupts stay off in the handler */
    pushq $UCODE
    pushq $kiln_upcall_trampoline
    movq $kiln_upcall_frame, %rdi
    iretq

nested_fault:
    movq $msg_nested, %rsi
    movl $msg_nested_end - msg_nested, %ecx
    movl ${EXIT_DOUBLE_FAULT}, %ebx
    jmp report_and_exit

supervisor_fault:
    movq $msg_supervisor, %rsi
    movl $msg_supervisor_end - msg_supervisor, %ecx
    movl ${EXIT_SUPERVISOR_FAULT}, %ebx

/* Print rcx bytes at rsi on COM1, then exit with status ebx. */
report_and_exit:
    movw ${COM1}, %dx
9:  movb (%rsi), %al
    outb %al, %dx
    incq %rsi
    decl %ecx
    jnz 9b
    movl %ebx, %eax
    movw ${EXIT_PORT}, %dx
    outl %eax, %dx
10: cli
    hlt
    jmp 10b

msg_nested:
    .ascii "\nkiln: CPU exception inside the exception handler; stopping\n"
msg_nested_end:
msg_supervisor:
    .ascii "\nkiln: CPU exception in the supervisor (a Kiln bug); stopping\n"
msg_supervisor_end:

/* ------------------------------------------------------------- tables */
.balign 8
sc_table:
    .quad sc_exit, sc_halt, sc_map, sc_unmap, sc_resume, sc_apic_write
    .quad sc_fault_test, sc_protect, sc_halt_for

.balign 8
gdt:
    .quad 0
    .quad 0x00af9a000000ffff        /* 0x08 kernel code, 64-bit */
    .quad 0x00cf92000000ffff        /* 0x10 kernel data */
    .quad 0x00cffa000000ffff        /* 0x18 user code, 32-bit (sysret base) */
    .quad 0x00cff2000000ffff        /* 0x20 user data */
    .quad 0x00affa000000ffff        /* 0x28 user code, 64-bit */
    .word tss_end - tss - 1         /* 0x30 TSS (16 bytes) */
    .word tss - kiln_sup_base       /* base 15:0 (supervisor < 64 KiB) */
    .byte SUP_BASE_ADDR >> 16       /* base 23:16 */
    .byte 0x89                      /* present, 64-bit TSS */
    .byte 0
    .byte 0                         /* base 31:24 */
    .long 0
    .long 0
gdt_end:
gdt_ptr:
    .word gdt_end - gdt - 1
    .quad gdt

.balign 16
idt:
    .set v, 0
    .rept {VECTORS}
    .word isr_stubs - kiln_sup_base + v * 16
    .word KCODE
    .byte 0
    .if v == 3
    .byte 0xee                      /* int3 allowed from CPL3 */
    .else
    .byte 0x8e                      /* interrupt gate, DPL 0 */
    .endif
    .word SUP_BASE_ADDR >> 16
    .long 0
    .long 0
    .set v, v + 1
    .endr
idt_end:
idt_ptr:
    .word idt_end - idt - 1
    .quad idt

/* 64-bit TSS followed by the I/O permission bitmap (0 = allowed). */
tss:
    .long 0
    .quad kstack_top                /* rsp0 */
    .quad 0, 0                      /* rsp1, rsp2 */
    .quad 0
    .fill 7, 8, 0                   /* ist1..7 */
    .quad 0
    .word 0
    .word 104                       /* I/O bitmap offset */
    .set b, 0
    .rept {IO_BITMAP_BYTES}
    .if b == {IO_OPEN0_BYTE}
    .byte {IO_OPEN0_VALUE}
    .elseif b == {IO_OPEN1_BYTE}
    .byte {IO_OPEN1_VALUE}
    .elseif b == {IO_OPEN2_BYTE}
    .byte {IO_OPEN2_VALUE}
    .elseif b == {IO_OPEN3_BYTE}
    .byte {IO_OPEN3_VALUE}
    .else
    .byte 0xff
    .endif
    .set b, b + 1
    .endr
    .byte 0xff                      /* required terminator */
tss_end:
.popsection

/* ------------------------------------------------- user-mode syscall stub */
/* `syscall` lands here. On kvm_pvm it does so still at CPL3 (no privilege
 * change), elsewhere at CPL0; so this stub lives in a user page and works
 * at either level: it answers -ENOSYS without touching the stack (the
 * caller's red zone stays intact). The Linux-ABI layer will replace it. */
.pushsection .text.kiln_lstar, "ax", @progbits
.globl kiln_lstar_stub
kiln_lstar_stub:
    movl %cs, %eax
    testl $3, %eax
    movq $-{ENOSYS}, %rax
    jz 12f
    jmp *%rcx                       /* CPL3: plain return to the caller */
12: sysretq                         /* CPL0: back to CPL3 */
.popsection

/* ------------------------------------------------- upcall trampoline (CPL3) */
/* The supervisor enters here on the upcall stack (rsp = top - 8, rdi =
 * frame). The interrupted code's x87/SSE state is saved before any Rust
 * runs (compiled Rust uses SSE registers freely); `upcall::resume` restores
 * it right before the resume call. */
.pushsection .text.kiln_upcall, "ax", @progbits
.globl kiln_upcall_trampoline
kiln_upcall_trampoline:
    fxsave64 kiln_upcall_fx
    subq $8, %rsp                   /* rsp = 8 mod 16 at the callee's entry */
    call kiln_upcall_entry
    ud2                             /* kiln_upcall_entry never returns */
.popsection

/* ------------------------------------------ supervisor zero-initialised */
.pushsection .supervisor.bss, "aw", @nobits
.balign 4096
window_pd:
    .skip 4096
window_pt:
    .skip 4096
kstack:
    .skip 4096
kstack_top:
sc_user_rsp:
    .skip 8
sc_user_rip:
    .skip 8
sc_user_rflags:
    .skip 8
upcall_active:
    .skip 1
x2apic_on:
    .skip 1
.popsection

/* --------------------------------------------- CPL3 (user) zero-initialised */
.pushsection .bss.kiln_upcall, "aw", @nobits
.globl kiln_wake_pending
kiln_wake_pending:
    .skip 1
.balign 16
.globl kiln_upcall_frame
kiln_upcall_frame:
    .skip {FRAME_SIZE}
.balign 16
.globl kiln_upcall_fx
kiln_upcall_fx:                     /* fxsave area of the interrupted code */
    .skip 512
.balign 16
.balign 4096
.globl kiln_upcall_stack_guard
kiln_upcall_stack_guard:            /* unmapped by the runtime: overflow faults */
    .skip 4096
kiln_upcall_stack:
    .skip 16384
kiln_upcall_stack_top:
.balign 4096
.globl kiln_boot_stack_guard
kiln_boot_stack_guard:              /* unmapped by the runtime: overflow faults */
    .skip 4096
.globl kiln_boot_stack_bottom
kiln_boot_stack_bottom:
    .skip {BOOT_STACK_BYTES}
.globl kiln_boot_stack_top
kiln_boot_stack_top:
.popsection
