//! # kiln-rt — what runs between the supervisor and an application's `main`
//!
//! The supervisor (in `kiln-hal`) drops to CPL3 at `kiln_rust_entry`; this
//! crate takes it from there, in order:
//!
//! 1. console ([`print!`], [`println!`]) and the crash report for CPU
//!    exceptions ([`fault`]);
//! 2. boot information from the PVH start info ([`boot`]): memory map and
//!    command line, validated;
//! 3. memory ([`memory`]): a frame allocator over the largest free RAM
//!    range above the image, and the heap region handed to the app's
//!    [`kiln_alloc::HeapAllocator`] through [`heap::GlobalHeap`];
//! 4. command line ([`kiln_abi::cmdline`]): `log=LEVEL` sets the [`log`]
//!    level (error, warn, info — the default —, debug, trace, off), the
//!    rest are the application's arguments;
//! 5. the application's `main`, whose return value becomes the exit status.
//!
//! An application names its parts with [`main!`]:
//!
//! ```ignore
//! #![cfg_attr(kiln_guest, no_std)]
//! #![no_main]
//! kiln_rt::main!(main, heap = kiln_alloc_bump::BumpHeap);
//! fn main(args: &[&str]) -> i32 { kiln_rt::println!("hi"); 0 }
//! ```
//!
//! A panic prints its message and location and exits with
//! [`kiln_abi::exit::PANIC`]; an unhandled CPU exception prints a report
//! and exits with [`kiln_abi::exit::FAULT`].
//!
//! Neighbours: `kiln-hal` below (the only other crate with `unsafe`),
//! `kiln-alloc*` for memory, apps above. Limits: one CPU; only RAM in the
//! first GiB and in the largest free range is used; no threads yet.
#![no_std]

extern crate alloc;

pub mod boot;
pub mod dma;

pub mod fault;
pub mod heap;
pub mod logger;
pub mod memory;
pub mod print;
pub mod testing;
pub mod thread;

pub use kiln_hal as hal;

#[doc(hidden)]
pub use alloc::boxed as alloc_box;
#[doc(hidden)]
pub use kiln_ktest as ktest_reexport;

/// Share of free memory given to the heap unless `heap=PERCENT` says otherwise.
pub const DEFAULT_HEAP_PERCENT: u64 = 50;

/// The `heap=PERCENT` option among kernel-option tokens (before `--`).
pub fn heap_percent<'a>(tokens: impl Iterator<Item = &'a str>) -> u64 {
    tokens
        .take_while(|t| *t != "--")
        .filter_map(|t| t.strip_prefix("heap="))
        .last()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_HEAP_PERCENT)
}

/// Prints `kiln: MESSAGE` and exits with `status`.
#[cfg(kiln_guest)]
fn die(message: impl core::fmt::Display, status: u8) -> ! {
    println!("kiln: {message}");
    crate::exit(status)
}

/// The boot steps after memory exists: logging, then the app's `main`.
#[cfg(kiln_guest)]
fn run_main(mem: memory::MemoryStats, cmdline: kiln_abi::cmdline::Cmdline) -> ! {
    use alloc::vec::Vec;
    logger::init(cmdline.option("log"));
    boot::publish_cmdline(&cmdline);
    log::debug!(
        "memory: {} KiB at {:#x}, heap {} KiB at {:#x}, {} frames free ({})",
        mem.range_bytes / 1024,
        mem.range_start,
        mem.heap.1 / 1024,
        mem.heap.0,
        mem.free_frames,
        <kiln_hal::platform::Current as kiln_hal::platform::Platform>::NAME,
    );
    if log::log_enabled!(log::Level::Debug)
        && let Some(ns) = kiln_hal::time::wall_clock_ns()
    {
        log::debug!("wall clock: {} s since the Unix epoch", ns / 1_000_000_000);
    }
    let args: Vec<&str> = cmdline
        .args
        .iter()
        .map(alloc::string::String::as_str)
        .collect();
    unsafe extern "Rust" {
        /// The application's main, defined by `kiln_rt::main!`.
        fn __kiln_main(args: &[&str]) -> i32;
    }
    // SAFETY: `main!` defines `__kiln_main` with exactly this signature; an
    // image without it does not link.
    let status = unsafe { __kiln_main(&args) };
    crate::exit(status as u8)
}

/// CPL3 entry from the supervisor (PVH): boot, run `main`, exit with its status.
#[cfg(all(kiln_guest, not(kiln_linuxu)))]
#[unsafe(no_mangle)]
extern "C" fn kiln_rust_entry(start_info_pa: u64) -> ! {
    use kiln_abi::exit;

    kiln_hal::console::init();
    kiln_hal::upcall::set_fault_hook(fault::report);
    if let Err(e) = kiln_hal::paging::harden_image() {
        die(
            format_args!("cannot protect the image: {e}"),
            exit::SUPERVISOR_FAULT,
        );
    }
    let info = boot::read(start_info_pa).unwrap_or_else(|e| die(e, exit::BAD_BOOT_INFO));
    let line = info.cmdline();
    let mem = memory::init(
        info.ram(),
        heap_percent(line.split(' ')),
        memory::image_end(),
        kiln_abi::IDENTITY_MAP_BYTES,
        info.module_ranges(),
    )
    .unwrap_or_else(|e| die(e, exit::OUT_OF_MEMORY));
    boot::publish_modules(info.module_ranges());
    let cmdline = kiln_abi::cmdline::parse(line).unwrap_or_else(|e| die(e, exit::BAD_BOOT_INFO));
    run_main(mem, cmdline)
}

/// Process entry on linuxu (`_start` passes the initial stack pointer):
/// RAM, signal handlers and the sandbox, then `main`.
#[cfg(all(kiln_guest, kiln_linuxu))]
#[unsafe(no_mangle)]
extern "C" fn kiln_linuxu_entry(sp: *const u64) -> ! {
    use kiln_abi::exit;
    use kiln_hal::linuxu;

    kiln_hal::upcall::set_fault_hook(fault::report);
    linuxu::set_stack_top(sp as u64);
    // SAFETY: `_start` passes the stack pointer the kernel entered with,
    // which points at argc, argv[], NULL as the SysV ABI lays out.
    let argv = unsafe { boot::Argv::from_initial_stack(sp) };
    if let Some(bad) = argv.invalid() {
        die(
            format_args!("argument {bad} is not UTF-8"),
            exit::BAD_BOOT_INFO,
        );
    }
    let mem_bytes = argv
        .iter()
        .skip(1)
        .take_while(|t| *t != "--")
        .filter_map(|t| t.strip_prefix("mem="))
        .last()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_LINUXU_MEMORY_BYTES);
    let (base, bytes) =
        linuxu::create_ram(mem_bytes).unwrap_or_else(|e| die(e, exit::OUT_OF_MEMORY));
    // An initrd is a host file the CLI names; it must be mapped before the
    // sandbox forbids open().
    let initrd = argv
        .iter()
        .skip(1)
        .take_while(|t| *t != "--")
        .filter_map(|t| t.strip_prefix("initrd="))
        .last()
        .map(|path| {
            linuxu::map_file(path)
                .map(|(start, len)| boot::RamRange { start, len })
                .unwrap_or_else(|e| {
                    die(
                        format_args!("cannot read the initrd {path}: {e}"),
                        exit::BAD_BOOT_INFO,
                    )
                })
        });
    linuxu::install_signal_handlers().unwrap_or_else(|e| die(e, exit::BAD_BOOT_INFO));
    // The network channel (`netchan=FD`) is set up while fcntl is allowed.
    if let Some(fd) = argv
        .iter()
        .skip(1)
        .take_while(|t| *t != "--")
        .filter_map(|t| t.strip_prefix("netchan="))
        .last()
        .and_then(|v| v.parse::<u64>().ok())
    {
        linuxu::setup_net_channel(fd).unwrap_or_else(|e| {
            die(
                format_args!("cannot set up the network channel: {e}"),
                exit::BAD_BOOT_INFO,
            )
        });
    }
    linuxu::enter_sandbox().unwrap_or_else(|e| die(e, exit::BAD_BOOT_INFO));
    let ram = [boot::RamRange {
        start: base,
        len: bytes,
    }];
    let mem = memory::init(&ram, heap_percent(argv.iter().skip(1)), 0, u64::MAX, &[])
        .unwrap_or_else(|e| die(e, exit::OUT_OF_MEMORY));
    boot::publish_modules(initrd.as_slice());
    boot::publish_linuxu_volumes(argv.iter().skip(1));
    let cmdline = kiln_abi::cmdline::Cmdline::from_tokens(argv.iter().skip(1));
    run_main(mem, cmdline)
}

/// Guest RAM on linuxu unless `mem=BYTES` says otherwise.
pub const DEFAULT_LINUXU_MEMORY_BYTES: u64 = 64 << 20;

/// Ends the guest now with `status`.
pub fn exit(status: u8) -> ! {
    kiln_hal::sc::exit(status)
}

/// Declares a Kiln application: its `main` and the heap allocator it uses.
///
/// `main` has the signature `fn(&[&str]) -> i32`; its arguments are those
/// after `--` on the command line, and its return value (low 8 bits) is the
/// guest's exit status. `heap` is any [`kiln_alloc::HeapAllocator`] with a
/// `Default` value; `sched` (optional) is the [`thread::Scheduler`] that
/// threads use — without one, [`thread::spawn`] says to name one.
///
/// In a host build (without `--cfg kiln_guest`) the macro produces a stub
/// `main` that says how to run the image, so `cargo build --workspace`
/// works on the host.
#[macro_export]
macro_rules! main {
    ($main:path, heap = $heap:ty, sched = $sched:ty $(,)?) => {
        $crate::main!(@common $main, $heap);

        #[cfg(kiln_guest)]
        #[unsafe(no_mangle)]
        fn __kiln_scheduler() -> Option<$crate::alloc_box::Box<dyn $crate::thread::Scheduler>> {
            Some($crate::alloc_box::Box::new(<$sched as Default>::default()))
        }
    };
    ($main:path, heap = $heap:ty $(,)?) => {
        $crate::main!(@common $main, $heap);

        #[cfg(kiln_guest)]
        #[unsafe(no_mangle)]
        fn __kiln_scheduler() -> Option<$crate::alloc_box::Box<dyn $crate::thread::Scheduler>> {
            None
        }
    };
    (@common $main:path, $heap:ty) => {
        #[cfg(kiln_guest)]
        #[global_allocator]
        static __KILN_HEAP: $crate::heap::GlobalHeap<$heap> = $crate::heap::GlobalHeap::new();

        #[cfg(kiln_guest)]
        #[unsafe(no_mangle)]
        fn __kiln_main(args: &[&str]) -> i32 {
            $main(args)
        }

        #[cfg(kiln_guest)]
        #[unsafe(no_mangle)]
        fn __kiln_heap_stats() -> $crate::heap::HeapStats {
            __KILN_HEAP.stats()
        }

        // Type-checks `main` on the host too (and keeps it "used").
        #[cfg(not(kiln_guest))]
        const _: fn(&[&str]) -> i32 = $main;

        #[cfg(not(kiln_guest))]
        mod __kiln_host_stub {
            #[unsafe(no_mangle)]
            extern "C" fn main() -> i32 {
                ::std::eprintln!(
                    "{} is a Kiln guest image, not a host program: run it with `kiln run {}`",
                    env!("CARGO_PKG_NAME"),
                    env!("CARGO_MANIFEST_DIR"),
                );
                2
            }
        }
    };
}
