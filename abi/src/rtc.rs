//! The CMOS real-time clock as Kiln's VMs expose it, and calendar math.
//!
//! Index port [`crate::port::CMOS_INDEX`] selects a register, data port
//! [`crate::port::CMOS_DATA`] reads it. Kiln's VMM answers in BCD, 24-hour
//! mode, UTC (status B = [`STATUS_B_24H`]); QEMU's RTC may differ, so
//! guests honour status B. The conversions here are pure and shared by the
//! VMM (writing) and the guest (reading).

/// Seconds register.
pub const REG_SECONDS: u8 = 0x00;
/// Minutes register.
pub const REG_MINUTES: u8 = 0x02;
/// Hours register.
pub const REG_HOURS: u8 = 0x04;
/// Day-of-month register.
pub const REG_DAY: u8 = 0x07;
/// Month register.
pub const REG_MONTH: u8 = 0x08;
/// Year (two digits) register.
pub const REG_YEAR: u8 = 0x09;
/// Status A (bit 7: update in progress).
pub const REG_STATUS_A: u8 = 0x0a;
/// Status B (bit 1: 24-hour, bit 2: binary instead of BCD).
pub const REG_STATUS_B: u8 = 0x0b;
/// Century register (ACPI's usual place).
pub const REG_CENTURY: u8 = 0x32;
/// Status B value Kiln's VMM reports: 24-hour, BCD.
pub const STATUS_B_24H: u8 = 0x02;

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day) of days since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A calendar time, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateTime {
    /// Full year.
    pub year: i64,
    /// 1–12.
    pub month: u32,
    /// 1–31.
    pub day: u32,
    /// 0–23.
    pub hour: u32,
    /// 0–59.
    pub minute: u32,
    /// 0–59.
    pub second: u32,
}

impl DateTime {
    /// The date and time of `secs` since the Unix epoch.
    pub fn from_unix(secs: u64) -> Self {
        let days = (secs / 86_400) as i64;
        let rest = (secs % 86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        Self {
            year,
            month,
            day,
            hour: rest / 3600,
            minute: rest / 60 % 60,
            second: rest % 60,
        }
    }

    /// Seconds since the Unix epoch (`None` before it or for invalid fields).
    pub fn to_unix(&self) -> Option<u64> {
        let valid = (1..=12).contains(&self.month)
            && (1..=31).contains(&self.day)
            && self.hour < 24
            && self.minute < 60
            && self.second < 60;
        if !valid {
            return None;
        }
        let days = days_from_civil(self.year, self.month, self.day);
        let secs = days * 86_400 + i64::from(self.hour * 3600 + self.minute * 60 + self.second);
        u64::try_from(secs).ok()
    }
}

/// BCD byte of 0–99.
pub fn to_bcd(v: u32) -> u8 {
    (((v / 10) % 10) << 4 | (v % 10)) as u8
}

/// Value of a BCD byte.
pub fn from_bcd(b: u8) -> u32 {
    u32::from(b >> 4) * 10 + u32::from(b & 0xf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_and_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(DateTime::from_unix(0).to_unix(), Some(0));
        let t = DateTime {
            year: 2026,
            month: 11,
            day: 29,
            hour: 17,
            minute: 1,
            second: 27,
        };
        assert_eq!(t.to_unix(), Some(1_795_971_687));
        assert_eq!(DateTime::from_unix(1_795_971_687), t);
    }

    #[test]
    fn round_trips_across_leap_years() {
        for secs in (0..4_102_444_800u64).step_by(86_400 * 37 + 3_607) {
            assert_eq!(DateTime::from_unix(secs).to_unix(), Some(secs));
        }
        assert_eq!(
            DateTime::from_unix(951_782_400),
            DateTime {
                year: 2000,
                month: 2,
                day: 29,
                hour: 0,
                minute: 0,
                second: 0
            }
        );
    }

    #[test]
    fn bcd_and_invalid_fields() {
        assert_eq!(to_bcd(59), 0x59);
        assert_eq!(from_bcd(0x26), 26);
        assert_eq!(
            DateTime {
                year: 2026,
                month: 13,
                day: 1,
                hour: 0,
                minute: 0,
                second: 0
            }
            .to_unix(),
            None
        );
    }
}
