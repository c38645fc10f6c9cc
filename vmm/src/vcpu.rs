//! Building the VM and running its one vCPU.

use std::io::Cursor;
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Instant;

use kvm_bindings::{KVM_MAX_CPUID_ENTRIES, kvm_fpu, kvm_segment, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use linux_loader::loader::KernelLoader;
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::devices::{self, Com1, LineFlushing, SharedConsole, Unhandled};
use crate::layout;
use crate::{Ending, Timings, VmmError};
use kiln_abi::port;

/// Interrupt routes reserved for a (future, userspace) IOAPIC.
const IOAPIC_PINS: u64 = 24;

/// One VM with one vCPU, ready to run.
pub struct Vm {
    // Kept alive for the vCPU's sake: closing the VM fd tears the VM down.
    _kvm: Kvm,
    _vm: Arc<VmFd>,
    ioapic: Arc<Mutex<crate::ioapic::Ioapic>>,
    vcpu: VcpuFd,
    mem: GuestMemoryMmap,
    com1: Com1,
    rtc: devices::Rtc,
    console: SharedConsole,
    /// Virtio-mmio slots in order, with the line each interrupts on.
    virtio: Vec<(
        crate::virtio::mmio::MmioTransport<Box<dyn crate::virtio::VirtioDevice>>,
        crate::ioapic::IrqLine,
    )>,
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmmError {
    move |cause| VmmError::Kvm { what, cause }
}

impl Vm {
    /// Creates the VM, loads the image and prepares the vCPU at the PVH entry.
    pub fn build(
        image: &[u8],
        memory_bytes: u64,
        cmdline: &str,
        initrd: Option<&[u8]>,
        devices: Vec<Box<dyn crate::virtio::VirtioDevice>>,
        console: Arc<Mutex<LineFlushing>>,
    ) -> Result<Self, VmmError> {
        if !(layout::MIN_MEMORY_BYTES..=layout::MAX_MEMORY_BYTES).contains(&memory_bytes) {
            return Err(VmmError::BadMemorySize {
                requested_bytes: memory_bytes,
            });
        }
        if cmdline.len() > kiln_abi::pvh::CMDLINE_MAX_BYTES {
            return Err(VmmError::CmdlineTooLong { len: cmdline.len() });
        }
        if cmdline.contains('\0') {
            return Err(VmmError::CmdlineNul);
        }
        // Image problems are reported before KVM is touched, so they read
        // the same on hosts without /dev/kvm.
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), memory_bytes as usize)])
            .map_err(|e| VmmError::GuestMemory {
            bytes: memory_bytes,
            detail: e.to_string(),
        })?;
        crate::elfcheck::check(image, memory_bytes)?;
        let entry = load_image(&mem, image, memory_bytes)?;
        let module = match initrd {
            Some(bytes) => Some(load_initrd(&mem, image, memory_bytes, bytes)?),
            None => None,
        };
        write_boot_info(&mem, memory_bytes, cmdline, module)?;

        let device =
            std::ffi::CString::new(crate::kvm_device().into_os_string().into_encoded_bytes())
                .map_err(|_| VmmError::KvmUnavailable(kvm_ioctls::Error::new(libc::EINVAL)))?;
        let kvm = Kvm::new_with_path(&device).map_err(VmmError::KvmUnavailable)?;
        let vm = kvm.create_vm().map_err(kvm_err("create a VM"))?;
        for (slot, region) in mem.iter().enumerate() {
            let host =
                mem.get_host_address(region.start_addr())
                    .map_err(|e| VmmError::GuestMemory {
                        bytes: memory_bytes,
                        detail: e.to_string(),
                    })?;
            let region_desc = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: the host range [host, host + len) is an mmap owned by
            // `mem`, which lives in the same `Vm` as the VM fd and so
            // outlives every use of the slot; slots do not overlap (one per
            // region, regions are disjoint).
            unsafe { vm.set_user_memory_region(region_desc) }
                .map_err(kvm_err("register guest memory"))?;
        }
        // Split irqchip: the local APIC (timer, x2APIC) lives in the kernel,
        // the legacy PIC and IOAPIC do not exist. A full in-kernel irqchip
        // costs ~15 ms to tear down on these hosts (docs/benchmarks.md).
        let cap = kvm_bindings::kvm_enable_cap {
            cap: kvm_bindings::KVM_CAP_SPLIT_IRQCHIP,
            args: [IOAPIC_PINS, 0, 0, 0],
            ..Default::default()
        };
        vm.enable_cap(&cap)
            .map_err(kvm_err("create the local APIC (split irqchip)"))?;

        let vcpu = vm.create_vcpu(0).map_err(kvm_err("create vCPU 0"))?;
        let cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("report CPUID"))?;
        let cpuid = with_timing_leaf(cpuid, vcpu.get_tsc_khz().ok());
        vcpu.set_cpuid2(&cpuid).map_err(kvm_err("set CPUID"))?;
        set_pvh_entry_state(&vcpu, entry)?;

        let console = SharedConsole(console);
        let vm = Arc::new(vm);
        let ioapic = Arc::new(Mutex::new(crate::ioapic::Ioapic::default()));
        let com1_irq = crate::ioapic::IrqLine {
            ioapic: ioapic.clone(),
            vm: vm.clone(),
            pin: usize::from(kiln_abi::COM1_IRQ),
        };
        let com1 = Com1::new(com1_irq, console.clone());
        let virtio = devices
            .into_iter()
            .enumerate()
            .map(|(slot, disk)| {
                let line = crate::ioapic::IrqLine {
                    ioapic: ioapic.clone(),
                    vm: vm.clone(),
                    pin: usize::from(kiln_abi::VIRTIO_FIRST_IRQ) + slot,
                };
                let raise_line = line.clone();
                let raise: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
                    use vm_superio::Trigger;
                    if let Err(e) = raise_line.trigger() {
                        eprintln!("kiln-vmm: cannot interrupt the guest: {e}");
                    }
                });
                (
                    crate::virtio::mmio::MmioTransport::with_line(disk, raise),
                    line,
                )
            })
            .collect();
        Ok(Self {
            virtio,
            _kvm: kvm,
            _vm: vm,
            ioapic,
            vcpu,
            mem,
            com1,
            rtc: devices::Rtc::default(),
            console,
        })
    }

    /// Runs the vCPU until the guest ends or `stop` is set.
    pub fn run_until_end(
        &mut self,
        stop: &AtomicBool,
        start: Instant,
    ) -> Result<(Ending, Timings), VmmError> {
        let mut timings = Timings::default();
        let mut unhandled = Unhandled::default();
        loop {
            if stop.load(Ordering::SeqCst) {
                timings.end = start.elapsed();
                return Ok((Ending::TimedOut { after: timings.end }, timings));
            }
            let exit = match self.vcpu.run() {
                Ok(exit) => exit,
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
                Err(e) => return Err(VmmError::Run(e)),
            };
            timings.exits += 1;
            if timings.first_exit.is_none() {
                timings.first_exit = Some(start.elapsed());
            }
            let ending = match exit {
                VcpuExit::IoOut(p, data) => {
                    let r = if p == kiln_abi::port::CMOS_INDEX {
                        self.rtc.select(data.first().copied().unwrap_or(0));
                        Out::Handled
                    } else {
                        handle_out(&mut self.com1, &mut self.console, &self.mem, p, data)
                    };
                    match r {
                        Out::Handled => {
                            unhandled.reset();
                            None
                        }
                        Out::Exit(status) => Some(Ending::Exited(status)),
                        Out::Unhandled => unhandled
                            .record(format!("port {p:#x}"), true)
                            .map(|what| Ending::UnhandledAccessLoop { what }),
                    }
                }
                VcpuExit::IoIn(p, data) => {
                    if p == kiln_abi::port::CMOS_DATA {
                        data.fill(0);
                        data[0] = self.rtc.read();
                        unhandled.reset();
                        None
                    } else if handle_in(&mut self.com1, p, data) {
                        unhandled.reset();
                        None
                    } else {
                        data.fill(0xff);
                        unhandled
                            .record(format!("port {p:#x}"), false)
                            .map(|what| Ending::UnhandledAccessLoop { what })
                    }
                }
                VcpuExit::MmioRead(addr, data) if ioapic_offset(addr).is_some() => {
                    let offset = ioapic_offset(addr).unwrap_or(0);
                    let value = self.ioapic.lock().map_or(0, |io| io.read(offset));
                    let bytes = value.to_le_bytes();
                    let n = data.len().min(4);
                    data[..n].copy_from_slice(&bytes[..n]);
                    unhandled.reset();
                    None
                }
                VcpuExit::MmioWrite(addr, data) if ioapic_offset(addr).is_some() => {
                    let mut bytes = [0u8; 4];
                    let n = data.len().min(4);
                    bytes[..n].copy_from_slice(&data[..n]);
                    if let Ok(mut io) = self.ioapic.lock() {
                        io.write(ioapic_offset(addr).unwrap_or(0), u32::from_le_bytes(bytes));
                    }
                    unhandled.reset();
                    None
                }
                VcpuExit::MmioRead(addr, data) if virtio_slot(addr).is_some() => {
                    let (slot, offset) = virtio_slot(addr).unwrap_or_default();
                    match self.virtio.get(slot) {
                        Some((transport, _)) => transport.read(offset, data),
                        None => data.fill(0), // no device: magic 0
                    }
                    unhandled.reset();
                    None
                }
                VcpuExit::MmioWrite(addr, data) if virtio_slot(addr).is_some() => {
                    let (slot, offset) = virtio_slot(addr).unwrap_or_default();
                    if let Some((transport, line)) = self.virtio.get_mut(slot)
                        && transport.write(offset, data, &self.mem)
                    {
                        use vm_superio::Trigger;
                        if let Err(e) = line.trigger() {
                            eprintln!("kiln-vmm: cannot interrupt the guest for its disk: {e}");
                        }
                    }
                    unhandled.reset();
                    None
                }
                // Where QEMU microvm has virtio transports, which guests
                // probe: nothing here, quietly (magic 0).
                VcpuExit::MmioRead(addr, data) if qemu_virtio_range(addr) => {
                    data.fill(0);
                    None
                }
                VcpuExit::MmioRead(addr, data) => {
                    data.fill(0xff);
                    unhandled
                        .record(format!("MMIO {addr:#x}"), false)
                        .map(|what| Ending::UnhandledAccessLoop { what })
                }
                VcpuExit::MmioWrite(addr, _) => unhandled
                    .record(format!("MMIO {addr:#x}"), true)
                    .map(|what| Ending::UnhandledAccessLoop { what }),
                VcpuExit::Shutdown => Some(Ending::TripleFault),
                VcpuExit::InternalError => Some(Ending::HypervisorError {
                    detail: "KVM_EXIT_INTERNAL_ERROR: KVM could not emulate a guest instruction \
                             (on kvm_pvm hosts: compiled code ran at CPL0, see docs/adr/0002)"
                        .into(),
                }),
                VcpuExit::FailEntry(reason, cpu) => Some(Ending::HypervisorError {
                    detail: format!("KVM could not enter vCPU {cpu} (hardware reason {reason:#x})"),
                }),
                VcpuExit::Hlt => Some(Ending::HypervisorError {
                    detail: "the guest halted with nothing left to wake it".into(),
                }),
                VcpuExit::Intr => None,
                other => Some(Ending::HypervisorError {
                    detail: format!("unexpected VM exit {other:?}"),
                }),
            };
            if let Some(ending) = ending {
                if !matches!(ending, Ending::Exited(_)) {
                    self.dump_state();
                }
                timings.end = start.elapsed();
                return Ok((ending, timings));
            }
        }
    }
}

impl Vm {
    /// With `KILN_LOG=debug`, prints the vCPU registers (for abnormal endings).
    fn dump_state(&self) {
        if !std::env::var("KILN_LOG").is_ok_and(|v| v == "debug" || v == "trace") {
            return;
        }
        if let (Ok(r), Ok(s)) = (self.vcpu.get_regs(), self.vcpu.get_sregs()) {
            eprintln!(
                "kiln-vmm: rip={:#x} rsp={:#x} rflags={:#x} rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x}",
                r.rip, r.rsp, r.rflags, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi
            );
            eprintln!(
                "kiln-vmm: cs={:#x}/{} cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x} idt={:#x}+{} gdt={:#x}+{}",
                s.cs.selector,
                s.cs.dpl,
                s.cr0,
                s.cr2,
                s.cr3,
                s.cr4,
                s.efer,
                s.idt.base,
                s.idt.limit,
                s.gdt.base,
                s.gdt.limit
            );
        }
    }
}

/// Adds the hypervisor timing leaf 0x4000_0010 (TSC and APIC-bus
/// frequencies in kHz, as VMware and KVM guests read it) so the guest's
/// clock needs no calibration loop.
fn with_timing_leaf(cpuid: kvm_bindings::CpuId, tsc_khz: Option<u32>) -> kvm_bindings::CpuId {
    const TIMING_LEAF: u32 = 0x4000_0010;
    /// KVM's local-APIC timer runs at 1 GHz.
    const APIC_BUS_KHZ: u32 = 1_000_000;
    let Some(tsc_khz) = tsc_khz.filter(|k| *k > 0) else {
        return cpuid;
    };
    let mut entries: Vec<kvm_bindings::kvm_cpuid_entry2> = cpuid
        .as_slice()
        .iter()
        .copied()
        .filter(|e| e.function != TIMING_LEAF)
        .collect();
    for e in entries.iter_mut() {
        if e.function == 0x4000_0000 {
            e.eax = e.eax.max(TIMING_LEAF);
        }
    }
    if !entries.iter().any(|e| e.function == 0x4000_0000) {
        return cpuid;
    }
    entries.push(kvm_bindings::kvm_cpuid_entry2 {
        function: TIMING_LEAF,
        eax: tsc_khz,
        ebx: APIC_BUS_KHZ,
        ..Default::default()
    });
    kvm_bindings::CpuId::from_entries(&entries).unwrap_or(cpuid)
}

/// Offset of `addr` in the IOAPIC's register page, if it is there.
fn qemu_virtio_range(addr: u64) -> bool {
    let span = kiln_abi::QEMU_MICROVM_VIRTIO_COUNT * kiln_abi::QEMU_MICROVM_VIRTIO_STRIDE;
    (kiln_abi::QEMU_MICROVM_VIRTIO_BASE..kiln_abi::QEMU_MICROVM_VIRTIO_BASE + span).contains(&addr)
}

/// The virtio-mmio slot and register offset of `addr`, if it is in one.
fn virtio_slot(addr: u64) -> Option<(usize, u64)> {
    let offset = addr.checked_sub(kiln_abi::VIRTIO_MMIO_BASE)?;
    let slot = offset / crate::virtio::mmio::WINDOW_BYTES;
    (slot < kiln_abi::VIRTIO_MMIO_SLOTS)
        .then_some((slot as usize, offset % crate::virtio::mmio::WINDOW_BYTES))
}

fn ioapic_offset(addr: u64) -> Option<u64> {
    addr.checked_sub(kiln_abi::IOAPIC_BASE)
        .filter(|o| *o < 0x1000)
}

/// What an `out` did.
enum Out {
    Handled,
    Exit(u8),
    Unhandled,
}

fn handle_out(
    com1: &mut Com1,
    console: &mut SharedConsole,
    mem: &GuestMemoryMmap,
    p: u16,
    data: &[u8],
) -> Out {
    use std::io::Write;
    match p {
        port::EXIT => Out::Exit(data.first().copied().unwrap_or(0)),
        _ if (port::COM1..port::COM1 + 8).contains(&p) => {
            if let Some(&b) = data.first() {
                let _ = com1.write((p - port::COM1) as u8, b);
            }
            Out::Handled
        }
        // No legacy PIC exists (split irqchip); the guest masks it anyway,
        // as it must on machines that have one.
        0x20 | 0x21 | 0xa0 | 0xa1 => Out::Handled,
        port::HOSTCALL if data.len() == 4 => {
            let addr = u64::from(u32::from_le_bytes([data[0], data[1], data[2], data[3]]));
            match devices::hostcall_console_bytes(mem, addr) {
                Ok(bytes) => {
                    let _ = console.write_all(&bytes);
                }
                Err(e) => eprintln!("kiln-vmm: refused a console hostcall: {e:?}"),
            }
            Out::Handled
        }
        _ => Out::Unhandled,
    }
}

fn handle_in(com1: &mut Com1, p: u16, data: &mut [u8]) -> bool {
    match p {
        port::HOSTCALL if data.len() == 4 => {
            data.copy_from_slice(&port::HOSTCALL_MAGIC.to_le_bytes());
            true
        }
        _ if (port::COM1..port::COM1 + 8).contains(&p) => {
            let v = com1.read((p - port::COM1) as u8);
            data.fill(0);
            data[0] = v;
            true
        }
        _ => false,
    }
}

/// Loads the ELF, returns the PVH entry address.
fn load_image(
    mem: &GuestMemoryMmap,
    image: &[u8],
    memory_bytes: u64,
) -> Result<GuestAddress, VmmError> {
    let mut cursor = Cursor::new(image);
    let result = Elf::load(
        mem,
        None,
        &mut cursor,
        Some(GuestAddress(kiln_abi::IMAGE_BASE)),
    )
    .map_err(|e| match e {
        linux_loader::loader::Error::Elf(linux_loader::loader::elf::Error::ReadKernelImage) => {
            // The loader reports writes beyond guest memory this way too.
            VmmError::BadImage("a segment could not be read from the file".into())
        }
        other => VmmError::BadImage(other.to_string()),
    })?;
    if result.kernel_end > memory_bytes {
        return Err(VmmError::ImageTooLarge {
            needed_bytes: result.kernel_end,
            memory_bytes,
        });
    }
    match result.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(entry) => Ok(entry),
        _ => Err(VmmError::NoPvhEntry),
    }
}

/// Copies the initrd to the top of readable guest memory; returns (addr, size).
fn load_initrd(
    mem: &GuestMemoryMmap,
    image: &[u8],
    memory_bytes: u64,
    bytes: &[u8],
) -> Result<(u64, u64), VmmError> {
    let size = bytes.len() as u64;
    let image_end = crate::elfcheck::image_end(image).unwrap_or(kiln_abi::IMAGE_BASE);
    let addr = layout::initrd_addr(memory_bytes, size)
        .filter(|a| *a >= image_end)
        .ok_or(VmmError::InitrdTooLarge {
            size_bytes: size,
            memory_bytes,
        })?;
    mem.write_slice(bytes, GuestAddress(addr))
        .map_err(|e| VmmError::GuestWrite {
            what: "the initrd",
            detail: e.to_string(),
        })?;
    Ok((addr, size))
}

fn write_boot_info(
    mem: &GuestMemoryMmap,
    memory_bytes: u64,
    cmdline: &str,
    initrd: Option<(u64, u64)>,
) -> Result<(), VmmError> {
    let write = |what: &'static str, bytes: &[u8], addr: u64| {
        mem.write_slice(bytes, GuestAddress(addr))
            .map_err(|e| VmmError::GuestWrite {
                what,
                detail: e.to_string(),
            })
    };
    write(
        "the PVH start info",
        &layout::start_info_bytes(memory_bytes, true, initrd),
        layout::START_INFO_ADDR,
    )?;
    if let Some((addr, size)) = initrd {
        write(
            "the module list",
            &layout::modlist_bytes(addr, size),
            layout::MODLIST_ADDR,
        )?;
    }
    let mut line = cmdline.as_bytes().to_vec();
    line.push(0);
    write("the command line", &line, layout::CMDLINE_ADDR)
}

/// 32-bit protected mode, paging off, flat segments, ebx = start info (PVH).
fn set_pvh_entry_state(vcpu: &VcpuFd, entry: GuestAddress) -> Result<(), VmmError> {
    let mut sregs = vcpu
        .get_sregs()
        .map_err(kvm_err("read segment registers"))?;
    let flat = |selector: u16, type_: u8| kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: 1,
        s: 1,
        l: 0,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    sregs.cs = flat(0x08, 0xb);
    let data = flat(0x10, 0x3);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.cr0 = 0x11; // PE | ET
    sregs.cr4 = 0;
    sregs.efer = 0;
    vcpu.set_sregs(&sregs)
        .map_err(kvm_err("set segment registers"))?;

    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm_err("set FPU state"))?;

    let mut regs = vcpu.get_regs().map_err(kvm_err("read registers"))?;
    regs.rflags = 0x2;
    regs.rip = entry.0;
    regs.rbx = layout::START_INFO_ADDR;
    vcpu.set_regs(&regs).map_err(kvm_err("set registers"))
}

/// The signal that kicks the vCPU thread out of KVM_RUN.
fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the (process-wide) handler of the kick signal. `run` calls it
/// before the vCPU thread exists: a kick that arrived before the handler
/// would take the default action and kill the whole process.
pub(crate) fn install_kick_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The handler does nothing: its only job is to make KVM_RUN return
        // EINTR instead of the signal killing the process.
        if let Err(e) = vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick) {
            eprintln!("kiln-vmm: cannot install the vCPU kick handler ({e}); timeouts may not stop the guest");
        }
    });
}

/// Interrupts the vCPU thread's KVM_RUN (it then checks its stop flag).
pub fn kick<T>(handle: &std::thread::JoinHandle<T>) {
    // SAFETY: pthread_kill only sends a signal; the thread handle is alive
    // (we hold its JoinHandle, so it has not been joined or detached), and
    // the signal has a handler installed before the thread first runs KVM_RUN.
    unsafe {
        libc::pthread_kill(handle.as_pthread_t(), kick_signal());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: the handler used to be installed by the vCPU thread
    /// itself, so an early kick could kill the process. After
    /// `install_kick_handler` (what `run` now calls before spawning), a
    /// kick to a brand-new thread is harmless.
    #[test]
    fn a_kick_right_after_spawn_does_not_kill_the_process() {
        install_kick_handler();
        // SAFETY: a zeroed sigaction is a valid out-parameter; passing a
        // null new action only queries the current one.
        let installed = unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(kick_signal(), std::ptr::null(), &mut old);
            old.sa_sigaction
        };
        assert_ne!(installed, libc::SIG_DFL, "the kick signal has no handler");
        let handle =
            std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(20)));
        kick(&handle);
        handle.join().unwrap();
    }
}
