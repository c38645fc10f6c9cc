//! `Kiln.toml`: the app manifest.
//!
//! ```toml
//! [image]
//! memory = "16M"          # guest RAM: a number with K, M or G
//! platform = "kvm"        # kvm | qemu | linuxu
//! timeout_secs = 30       # stop the guest after this long (0 = never)
//! args = ["--flag"]       # default application arguments
//! log = "info"            # guest log level
//! ```
//!
//! Every key is optional; command-line flags override them.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Name of the manifest file in an app directory.
pub const FILE_NAME: &str = "Kiln.toml";

/// Where an image runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// Kiln's embedded KVM VMM.
    #[default]
    Kvm,
    /// `qemu-system-x86_64 -M microvm`.
    Qemu,
    /// A sandboxed Linux process.
    Linuxu,
}

impl std::str::FromStr for Platform {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "kvm" => Ok(Self::Kvm),
            "qemu" => Ok(Self::Qemu),
            "linuxu" => Ok(Self::Linuxu),
            other => Err(format!(
                "unknown platform `{other}` (use kvm, qemu or linuxu)"
            )),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Kvm => "kvm",
            Self::Qemu => "qemu",
            Self::Linuxu => "linuxu",
        })
    }
}

/// A memory size in bytes, written `16M`, `512K`, `1G` or a plain byte count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemorySize(pub u64);

impl std::str::FromStr for MemorySize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let (digits, shift) = match t.chars().last() {
            Some('K' | 'k') => (&t[..t.len() - 1], 10),
            Some('M' | 'm') => (&t[..t.len() - 1], 20),
            Some('G' | 'g') => (&t[..t.len() - 1], 30),
            _ => (t, 0),
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("`{s}` is not a memory size (write e.g. 16M, 512K or 1G)"))?;
        n.checked_mul(1 << shift)
            .filter(|b| *b > 0)
            .map(MemorySize)
            .ok_or_else(|| format!("`{s}` is not a usable memory size"))
    }
}

impl<'de> Deserialize<'de> for MemorySize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The `[image]` table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSection {
    /// Guest RAM.
    pub memory: Option<MemorySize>,
    /// Default platform.
    pub platform: Option<Platform>,
    /// Default timeout in seconds (0 = none).
    pub timeout_secs: Option<u64>,
    /// Default application arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Guest log level.
    pub log: Option<LogLevel>,
    /// A host directory packed into the initrd the guest mounts as `/`
    /// (relative to the app directory).
    pub rootfs: Option<PathBuf>,
    /// Give the guest a network device (rootless user-mode networking
    /// unless `kiln run --net` says otherwise). `-p` implies it.
    #[serde(default)]
    pub net: bool,
    /// Ports forwarded by default, as `-p` takes them ("8080:80").
    #[serde(default)]
    pub ports: Vec<String>,
}

/// A guest log level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Nothing.
    Off,
    /// Errors.
    Error,
    /// Warnings and up.
    Warn,
    /// Information and up.
    Info,
    /// Debugging and up.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The word the guest's `log=` option takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

/// A parsed `Kiln.toml`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The `[image]` table.
    #[serde(default)]
    pub image: ImageSection,
}

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The directory has no `Kiln.toml`.
    #[error(
        "{dir} has no Kiln.toml: it is not a Kiln app (create one with an [image] table, or pass a built image)"
    )]
    Missing {
        /// The directory.
        dir: PathBuf,
    },
    /// The file could not be read.
    #[error("cannot read {path}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys or bad values.
    #[error("{path} is invalid: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The parser's message, which names the key and line.
        message: String,
    },
}

impl Manifest {
    /// Parses manifest text; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ManifestError> {
        toml::from_str(text).map_err(|e| ManifestError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', "\n  "),
        })
    }

    /// Reads `DIR/Kiln.toml`.
    pub fn load(dir: &Path) -> Result<Self, ManifestError> {
        let path = dir.join(FILE_NAME);
        if !path.is_file() {
            return Err(ManifestError::Missing {
                dir: dir.to_path_buf(),
            });
        }
        let text = std::fs::read_to_string(&path).map_err(|cause| ManifestError::Read {
            path: path.clone(),
            cause,
        })?;
        Self::parse(&text, &path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(text, Path::new("apps/x/Kiln.toml"))
    }

    #[test]
    fn full_manifest_parses() {
        let m = parse(
            "[image]\nmemory = \"32M\"\nplatform = \"qemu\"\ntimeout_secs = 5\nargs = [\"a\", \"b c\"]\nlog = \"debug\"\n",
        )
        .unwrap();
        assert_eq!(m.image.memory, Some(MemorySize(32 << 20)));
        assert_eq!(m.image.platform, Some(Platform::Qemu));
        assert_eq!(m.image.timeout_secs, Some(5));
        assert_eq!(m.image.args, vec!["a".to_string(), "b c".to_string()]);
        assert_eq!(m.image.log, Some(LogLevel::Debug));
    }

    #[test]
    fn empty_manifest_is_all_defaults() {
        assert_eq!(parse("").unwrap(), Manifest::default());
    }

    #[test]
    fn unknown_key_is_named_with_the_file() {
        let e = parse("[image]\nmemroy = \"16M\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("apps/x/Kiln.toml"), "{e}");
        assert!(e.contains("memroy"), "{e}");
        let e = parse("[imagee]\n").unwrap_err().to_string();
        assert!(e.contains("imagee"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = parse("[image]\nmemory = \"16X\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("memory") && e.contains("16X"), "{e}");
        let e = parse("[image]\nplatform = \"xen\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("platform") && e.contains("xen"), "{e}");
        let e = parse("[image]\ntimeout_secs = -1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("timeout_secs"), "{e}");
    }

    #[test]
    fn broken_toml_is_an_error_not_a_panic() {
        assert!(parse("[image\nmemory = ").is_err());
        assert!(parse("\u{0}\u{1}").is_err());
    }

    #[test]
    fn memory_sizes() {
        assert_eq!("2M".parse::<MemorySize>(), Ok(MemorySize(2 << 20)));
        assert_eq!("512k".parse::<MemorySize>(), Ok(MemorySize(512 << 10)));
        assert_eq!("1G".parse::<MemorySize>(), Ok(MemorySize(1 << 30)));
        assert_eq!("4096".parse::<MemorySize>(), Ok(MemorySize(4096)));
        assert!("0M".parse::<MemorySize>().is_err());
        assert!("M".parse::<MemorySize>().is_err());
        assert!("99999999999999G".parse::<MemorySize>().is_err());
    }

    #[test]
    fn missing_manifest_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let e = Manifest::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("has no Kiln.toml"), "{e}");
    }
}
