//! Deterministic, realistic Tencent FOCUS bill files for tests, the example bucket and
//! benchmarks (`billpipe generate`).
//!
//! What makes them realistic is what makes real Tencent files awkward: Tencent's FOCUS column
//! set (1.0 plus the 1.1 CapacityReservation columns), Chinese text in names and descriptions,
//! quoted fields with commas and quotes, the documented gaps (EffectiveCost, ServiceCategory,
//! SkuId, SkuPriceId, ResourceType, CommitmentDiscountType empty; `Usage-based` / `One-time`
//! spellings; BillingPeriodEnd the inclusive last second of the Beijing-time month, written in
//! UTC), money with 8 fractional digits, and voucher (Credit) rows with BilledCost 0.
//!
//! A month's rows are a pure function of (seed, account, month, day, row), so the daily file of
//! day D holds exactly the first D-1 days of the monthly file: snapshots nest the way real
//! month-to-date bills do, and tests can predict every total.

use crate::values::{days_from_civil, format_decimal, year_month_from_days, Month};
use crate::{Error, Result};

mod consolidated;
mod detail;
mod focus;

pub use consolidated::{
    consolidated_object_name, customer_ids, write_consolidated_csv, write_consolidated_zip,
    ConsolidatedStats,
};
pub use detail::{write_detail_csv, DetailStats, DETAIL_HEADER};
pub use focus::{write_focus_csv, HEADER};

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub account: String,
    /// `YYYY-MM`
    pub month: String,
    /// Include days 1..=through (a daily snapshot delivered the next day); `None` = whole month.
    pub through_day: Option<u32>,
    pub rows_per_day: u64,
    pub seed: u64,
    /// Row numbers (0-based, in file order) whose BilledCost is written unparsable.
    pub bad_rows: Vec<u64>,
    /// Add 1 (in the last fractional digit) to every BilledCost: a restated bill.
    pub restated: bool,
    /// Shape the month like real Tencent FOCUS files with their gaps (as the public FOCUS
    /// sample has them): credits with negative BilledCost, Tax rows, and adjustments, whose
    /// ContractedCost, ListCost, unit prices, quantities and ServiceName are empty.
    pub gaps: bool,
}

/// What was written, for tests to compare the lake against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GenerateStats {
    pub rows: u64,
    /// Sum of BilledCost of the parsable rows, scaled by 10^8.
    pub billed_cost_e8: i128,
    pub bytes: u64,
}

struct Rng(u64);

impl Rng {
    fn new(parts: &[u64]) -> Rng {
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        for p in parts {
            s = splitmix(s ^ p);
        }
        Rng(s)
    }
    fn next(&mut self) -> u64 {
        self.0 = splitmix(self.0);
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn hash_str(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

struct Service {
    name: &'static str,
    prefix: &'static str,
    unit: &'static str,
    url: &'static str,
    /// Unit price range in 1e-8 currency units.
    price: (u64, u64),
}

const SERVICES: &[Service] = &[
    Service {
        name: "云服务器 CVM",
        prefix: "ins-",
        unit: "Hours",
        url: "https://www.tencentcloud.com/pricing/cvm",
        price: (1_000_000, 90_000_000),
    },
    Service {
        name: "云硬盘 CBS",
        prefix: "disk-",
        unit: "GB-Hours",
        url: "https://www.tencentcloud.com/pricing/cbs",
        price: (5_000, 40_000),
    },
    Service {
        name: "对象存储 COS",
        prefix: "cos-",
        unit: "GB",
        url: "https://www.tencentcloud.com/pricing/cos",
        price: (1_000_000, 2_500_000),
    },
    Service {
        name: "云数据库 MySQL",
        prefix: "cdb-",
        unit: "Hours",
        url: "https://www.tencentcloud.com/pricing/cdb",
        price: (4_000_000, 120_000_000),
    },
    Service {
        name: "内容分发网络 CDN",
        prefix: "cdn-",
        unit: "GB",
        url: "https://www.tencentcloud.com/pricing/cdn",
        price: (2_000_000, 8_000_000),
    },
    Service {
        name: "负载均衡 CLB",
        prefix: "lb-",
        unit: "Hours",
        url: "https://www.tencentcloud.com/pricing/clb",
        price: (500_000, 3_000_000),
    },
];

const REGIONS: &[(&str, &str, &str)] = &[
    ("ap-guangzhou", "华南地区（广州）", "ap-guangzhou-3"),
    ("ap-shanghai", "华东地区（上海）", "ap-shanghai-2"),
    ("ap-singapore", "亚太东南（新加坡）", "ap-singapore-1"),
    ("na-siliconvalley", "美国西部（硅谷）", "na-siliconvalley-1"),
];

const NAMES: &[&str] = &[
    "订单服务",
    "支付网关",
    "用户中心",
    "日志分析",
    "推荐引擎",
    "数据仓库",
];
const ENVS: &[&str] = &["生产", "测试", "预发布"];

/// The billing month of the options (`YYYY-MM`).
fn month_of(month: &str) -> Result<Month> {
    month
        .parse()
        .map_err(|e: crate::values::ParseMonthError| Error::Config(e.to_string()))
}

/// `YYYY-MM-DDTHH:MM:SSZ` of Beijing local midnight of day `days` plus `secs`, in UTC.
fn utc_of_beijing(days: i64, secs: i64) -> String {
    let t = days * 86_400 + secs - 8 * 3600;
    let d = t.div_euclid(86_400);
    let s = t.rem_euclid(86_400);
    let (y, m) = year_month_from_days(d);
    let day = d - days_from_civil(y, m, 1) + 1;
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

fn money(v_e8: i128) -> String {
    let sign = if v_e8 < 0 { "-" } else { "" };
    let a = v_e8.unsigned_abs();
    format!("{sign}{}.{:08}", a / 100_000_000, a % 100_000_000)
}

fn csv_field(out: &mut String, value: &str) {
    if value.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

/// Formats one CRLF-terminated CSV record into `line`.
fn csv_line<'a>(line: &mut String, fields: impl Iterator<Item = &'a str>) {
    line.clear();
    for (i, f) in fields.enumerate() {
        if i > 0 {
            line.push(',');
        }
        csv_field(line, f);
    }
    line.push_str("\r\n");
}

/// Tencent's object name for a snapshot: daily `…-YYYYMMDD.CSV` (delivered the day after
/// `through_day`), monthly `…-YYYYMM.CSV`.
pub fn object_name(account: &str, month: &str, through_day: Option<u32>) -> Result<String> {
    let month = month_of(month)?;
    let (y, m) = (month.year(), month.month());
    Ok(match through_day {
        None => format!("FOCUS-bill_details-{account}-{y:04}{m:02}.CSV"),
        Some(d) => {
            let delivered = month.first_day() + d as i64;
            let (dy, dm) = year_month_from_days(delivered);
            let dd = delivered - days_from_civil(dy, dm, 1) + 1;
            format!("FOCUS-bill_details-{account}-{dy:04}{dm:02}{dd:02}.CSV")
        }
    })
}

/// Formats a 1e-8-scaled sum like the lake's decimals, for comparing.
pub fn format_e8(v: i128) -> String {
    format_decimal(v * 10_000_000_000, 18)
}
