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

use std::io::Write;

use crate::ingest::decode::{days_from_civil, format_decimal};
use crate::{Error, Result};

pub const HEADER: &[&str] = &[
    "AvailabilityZone",
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "CapacityReservationId",
    "CapacityReservationStatus",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargeFrequency",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "CommitmentDiscountCategory",
    "CommitmentDiscountId",
    "CommitmentDiscountName",
    "CommitmentDiscountStatus",
    "CommitmentDiscountType",
    "ConsumedQuantity",
    "ConsumedUnit",
    "ContractedCost",
    "ContractedUnitPrice",
    "EffectiveCost",
    "InvoiceIssuerName",
    "ListCost",
    "ListUnitPrice",
    "PricingCategory",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "RegionId",
    "RegionName",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "ServiceCategory",
    "ServiceName",
    "SkuId",
    "SkuPriceId",
    "SubAccountId",
    "SubAccountName",
    "Tags",
];

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

fn month_parts(month: &str) -> Result<(i64, u32)> {
    let bad = || Error::Config(format!("month {month:?} is not YYYY-MM"));
    let (y, m) = month.split_once('-').ok_or_else(bad)?;
    let y: i64 = y.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    if !(1..=12).contains(&m) {
        return Err(bad());
    }
    Ok((y, m))
}

fn days_in(y: i64, m: u32) -> u32 {
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    (days_from_civil(ny, nm, 1) - days_from_civil(y, m, 1)) as u32
}

/// `YYYY-MM-DDTHH:MM:SSZ` of Beijing local midnight of day `days` plus `secs`, in UTC.
fn utc_of_beijing(days: i64, secs: i64) -> String {
    let t = days * 86_400 + secs - 8 * 3600;
    let d = t.div_euclid(86_400);
    let s = t.rem_euclid(86_400);
    let (y, m) = crate::ingest::decode::year_month_from_days(d);
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

/// Writes one FOCUS CSV snapshot (CRLF line ends, as Windows-made bills have).
pub fn write_focus_csv(opts: &GenerateOptions, out: impl Write) -> Result<GenerateStats> {
    let (y, m) = month_parts(&opts.month)?;
    let days = days_in(y, m);
    let through = opts.through_day.unwrap_or(days).min(days);
    let first_day = days_from_civil(y, m, 1);
    let period_start = utc_of_beijing(first_day, 0);
    let period_end = utc_of_beijing(first_day + days as i64, -1);
    let acct_hash = hash_str(&opts.account);
    let mut w = std::io::BufWriter::with_capacity(1 << 20, out);
    let io = |e| Error::io("generated CSV", e);
    let mut stats = GenerateStats::default();
    let mut line = HEADER.join(",");
    line.push_str("\r\n");
    w.write_all(line.as_bytes()).map_err(io)?;
    stats.bytes += line.len() as u64;
    let mut row_no = 0u64;
    for day in 1..=through {
        let day_index = first_day + day as i64 - 1;
        for r in 0..opts.rows_per_day {
            let mut rng = Rng::new(&[opts.seed, acct_hash, day_index as u64, r]);
            let svc = rng.pick(SERVICES);
            let (region_id, region_name, zone) = *rng.pick(REGIONS);
            let hour = rng.below(24) as i64;
            let kind = rng.below(100);
            let (category, frequency) = match (opts.gaps, kind) {
                (false, 0..=89) | (true, 0..=79) => ("Usage", "Usage-based"),
                (false, 90..=93) | (true, 80..=82) => ("Purchase", "One-time"),
                (false, 94..=95) | (true, 83) => ("Purchase", "Recurring"),
                (false, 96..=97) | (true, 84..=89) => ("Credit", "One-time"),
                (true, 90..=94) => ("Tax", "One-time"),
                _ => ("Adjustment", "One-time"),
            };
            // Rows without a price: their pricing columns and ServiceName are empty.
            let gap = opts.gaps && matches!(category, "Credit" | "Tax" | "Adjustment");
            let qty_e2 = 1 + rng.below(100_000) as i128; // 2 decimals
            let unit_e8 = (svc.price.0 + rng.below(svc.price.1 - svc.price.0)) as i128;
            let list_e8 = (qty_e2 * unit_e8 + 50) / 100;
            let discount_pct = 60 + rng.below(41) as i128;
            let contracted_unit_e8 = unit_e8 * discount_pct / 100;
            let contracted_e8 = (qty_e2 * contracted_unit_e8 + 50) / 100;
            let mut billed_e8 = match category {
                "Credit" if opts.gaps => -contracted_e8, // a credit note
                "Credit" => 0, // Tencent: voucher deductions carry BilledCost 0
                "Tax" => contracted_e8 * 6 / 100,
                "Adjustment" => -(contracted_e8 / 10),
                _ => contracted_e8,
            };
            if opts.restated {
                billed_e8 += 1;
            }
            let sub = if rng.below(4) == 0 {
                format!(
                    "{}",
                    100_000_000_000u64 + (acct_hash % 1000) * 7 + rng.below(3)
                )
            } else {
                opts.account.clone()
            };
            let env = rng.pick(ENVS);
            let name = rng.pick(NAMES);
            let n = rng.below(40);
            let resource_name = match rng.below(20) {
                0 => format!("{env}-{name}, 主节点 \"{n}\""),
                _ => format!("{env}-{name}-{n:02}"),
            };
            let tags = match rng.below(3) {
                0 => String::new(),
                1 => format!("{{\"项目\":\"{name}\",\"env\":\"{env}\"}}"),
                _ => format!("{{\"cost-center\":\"CC{:03}\"}}", rng.below(50)),
            };
            let charge_start = utc_of_beijing(day_index, hour * 3600);
            let charge_end = utc_of_beijing(day_index, (hour + 1) * 3600);
            let bad = opts.bad_rows.contains(&row_no);
            let billed_text = if bad {
                "12.34.56".to_string()
            } else {
                money(billed_e8)
            };
            let resource_id = format!("{}{:08x}", svc.prefix, rng.next() as u32 % 4096);
            let blank = |text: String| if gap { String::new() } else { text };
            let quantity = blank(format!("{}.{:02}", qty_e2 / 100, qty_e2 % 100));
            let unit = if gap { "" } else { svc.unit };
            let contracted = blank(money(contracted_e8));
            let contracted_unit = blank(money(contracted_unit_e8));
            let list = blank(money(list_e8));
            let list_unit = blank(money(unit_e8));
            let service_name = if gap { "" } else { svc.name };
            let fields: [&str; 45] = [
                zone,
                &billed_text,
                &opts.account,
                "示例科技有限公司",
                "USD",
                &period_end,
                &period_start,
                "",
                "",
                category,
                "",
                svc.url,
                frequency,
                &charge_end,
                &charge_start,
                "",
                "",
                "",
                "",
                "",
                &quantity,
                unit,
                &contracted,
                &contracted_unit,
                "",
                "Tencent Cloud International Pte. Ltd.",
                &list,
                &list_unit,
                if gap { "" } else { "Standard" },
                &quantity,
                unit,
                "Tencent Cloud",
                "Tencent Cloud",
                region_id,
                region_name,
                &resource_id,
                &resource_name,
                "",
                "",
                service_name,
                "",
                "",
                &sub,
                if sub == opts.account {
                    "主账号"
                } else {
                    "成员账号"
                },
                &tags,
            ];
            csv_line(&mut line, fields.iter().map(|f| f.as_ref()));
            w.write_all(line.as_bytes()).map_err(io)?;
            stats.bytes += line.len() as u64;
            stats.rows += 1;
            if !bad {
                stats.billed_cost_e8 += billed_e8;
            }
            row_no += 1;
        }
    }
    w.flush().map_err(io)?;
    Ok(stats)
}

/// Tencent's object name for a snapshot: daily `…-YYYYMMDD.CSV` (delivered the day after
/// `through_day`), monthly `…-YYYYMM.CSV`.
pub fn object_name(account: &str, month: &str, through_day: Option<u32>) -> Result<String> {
    let (y, m) = month_parts(month)?;
    Ok(match through_day {
        None => format!("FOCUS-bill_details-{account}-{y:04}{m:02}.CSV"),
        Some(d) => {
            let delivered = days_from_civil(y, m, 1) + d as i64;
            let (dy, dm) = crate::ingest::decode::year_month_from_days(delivered);
            let dd = delivered - days_from_civil(dy, dm, 1) + 1;
            format!("FOCUS-bill_details-{account}-{dy:04}{dm:02}{dd:02}.CSV")
        }
    })
}

/// Formats a 1e-8-scaled sum like the lake's decimals, for comparing.
pub fn format_e8(v: i128) -> String {
    format_decimal(v * 10_000_000_000, 18)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_nested() {
        let opts = |through| GenerateOptions {
            account: "200020002001".into(),
            month: "2025-12".into(),
            through_day: through,
            rows_per_day: 5,
            seed: 1,
            bad_rows: vec![],
            restated: false,
            gaps: false,
        };
        let mut a = Vec::new();
        let mut b = Vec::new();
        let sa = write_focus_csv(&opts(Some(3)), &mut a).unwrap();
        let sb = write_focus_csv(&opts(None), &mut b).unwrap();
        assert_eq!(sa.rows, 15);
        assert_eq!(sb.rows, 31 * 5);
        assert!(b.starts_with(&a), "a daily is a prefix of the monthly");
        let text = String::from_utf8(a).unwrap();
        assert!(text.contains("2025-11-30T16:00:00Z") && text.contains("2025-12-31T15:59:59Z"));
        assert_eq!(
            object_name("1", "2025-12", Some(3)).unwrap(),
            "FOCUS-bill_details-1-20251204.CSV"
        );
        assert_eq!(
            object_name("1", "2025-12", Some(31)).unwrap(),
            "FOCUS-bill_details-1-20260101.CSV"
        );
        assert_eq!(
            object_name("1", "2025-12", None).unwrap(),
            "FOCUS-bill_details-1-202512.CSV"
        );
    }
}

/// Tencent's native detail-bill header (intl Billing Center "Fields in Bills" order, plus two
/// columns of the Nov-2024 upgrade). The zh_cn form replaces the names the CN/intl crosswalk
/// knows; the rest stay English, as the crosswalk has no Chinese for them.
pub const DETAIL_HEADER: &[(&str, &str)] = &[
    ("Payer Account ID", "支付者UIN"),
    ("Owner Account ID", "使用者UIN"),
    ("Operator Account ID", "操作者UIN"),
    ("Product Name", "产品名称"),
    ("Subproduct Name", "子产品名称"),
    ("Billing Mode", "计费模式"),
    ("Transaction Type", "交易类型"),
    ("Transaction ID", "交易ID"),
    ("Transaction Time", "扣费时间"),
    ("Usage Start Time", "开始使用时间"),
    ("Usage End Time", "结束使用时间"),
    ("Instance ID", "资源ID"),
    ("Instance Name", "实例名称"),
    ("Instance Type", "Instance Type"),
    ("Project Name", "项目名称"),
    ("Region", "地域"),
    ("Availability Zone", "可用区"),
    ("Component Type", "组件类型"),
    ("Component Name", "组件名称"),
    ("Component List Price", "组件刊例价"),
    ("Component Contracted Price", "组件单价"),
    ("Component Price Measurement Unit", "组件价格单位"),
    ("Component Usage", "组件用量"),
    ("Component Usage Unit", "组件用量单位"),
    ("Usage Duration", "使用时长"),
    ("Duration Unit", "时长单位"),
    ("Original Cost", "组件原价"),
    ("Discount Multiplier", "折扣率"),
    ("Total Amount After Discount (Excluding Tax)", "优惠后总价"),
    ("Voucher Deduction", "代金券支出(元)"),
    ("Currency", "Currency"),
    ("Tax Rate", "Tax Rate"),
    ("Tax Amount", "Tax Amount"),
    ("Total Cost (Including Tax)", "Total Cost (Including Tax)"),
    ("Region Code", "地域编码"),
    ("Bill Month", "账单月份"),
];

/// What a detail bill holds, for tests: rows, and the BilledCost FOCUS expects (Total Cost of
/// every row but voucher rows, which Tencent's mapping sets to 0), scaled by 10^8.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DetailStats {
    pub rows: u64,
    pub billed_cost_e8: i128,
    pub voucher_rows: u64,
}

/// Writes a native Tencent detail bill (Beijing-time date-times, `zh` for Chinese headers and
/// values). Rows are a pure function of (seed, account, day, row), like the FOCUS generator.
pub fn write_detail_csv(opts: &GenerateOptions, zh: bool, out: impl Write) -> Result<DetailStats> {
    let (y, m) = month_parts(&opts.month)?;
    let days = days_in(y, m);
    let through = opts.through_day.unwrap_or(days).min(days);
    let first_day = days_from_civil(y, m, 1);
    let acct_hash = hash_str(&opts.account);
    let mut w = std::io::BufWriter::new(out);
    let io = |e| Error::io("generated CSV", e);
    let header: Vec<&str> = DETAIL_HEADER
        .iter()
        .map(|(en, cn)| if zh { *cn } else { *en })
        .collect();
    // zh_cn exports carry a BOM, as Excel-friendly Chinese CSVs usually do.
    if zh {
        w.write_all("\u{feff}".as_bytes()).map_err(io)?;
    }
    w.write_all(header.join(",").as_bytes()).map_err(io)?;
    w.write_all(b"\r\n").map_err(io)?;
    let mut stats = DetailStats::default();
    let mut line = String::new();
    for day in 1..=through {
        let day_index = first_day + day as i64 - 1;
        for r in 0..opts.rows_per_day {
            let mut rng = Rng::new(&[opts.seed, acct_hash, day_index as u64, r, 7]);
            let svc = rng.pick(SERVICES);
            let (region_id, region_name, zone) = *rng.pick(REGIONS);
            let hour = rng.below(24);
            let kind = rng.below(100);
            let (tx_en, tx_zh) = match kind {
                0..=84 => ("Pay-as-you-go hourly", "按量计费小时结"),
                85..=91 => ("Monthly subscription", "包年包月新购"),
                92..=95 => ("Renewal", "续费"),
                _ => ("Voucher deduction", "代金券抵扣"),
            };
            let qty_e2 = 1 + rng.below(50_000) as i128;
            let unit_e8 = (svc.price.0 + rng.below(svc.price.1 - svc.price.0)) as i128;
            let list_e8 = (qty_e2 * unit_e8 + 50) / 100;
            let discount_pct = 60 + rng.below(41) as i128;
            let after_e8 = list_e8 * discount_pct / 100;
            let tax_e8 = after_e8 * 6 / 100;
            let total_e8 = after_e8 + tax_e8;
            let owner = if rng.below(3) == 0 {
                format!("{}", 100_000_000_000u64 + acct_hash % 997)
            } else {
                opts.account.clone()
            };
            let date = |d: i64, h: u64| {
                let (yy, mm) = crate::ingest::decode::year_month_from_days(d);
                let dd = d - days_from_civil(yy, mm, 1) + 1;
                format!("{yy:04}-{mm:02}-{dd:02} {h:02}:00:00")
            };
            let voucher = tx_en == "Voucher deduction";
            let name = rng.pick(NAMES);
            let instance_name = format!("{}-{name}-{:02}", rng.pick(ENVS), rng.below(30));
            let fields: Vec<String> = vec![
                opts.account.clone(),
                owner.clone(),
                owner,
                if zh {
                    svc.name.to_string()
                } else {
                    svc.name.split(' ').nth(1).unwrap_or(svc.name).to_string()
                },
                svc.name.to_string(),
                if kind < 85 {
                    "Pay-As-You-Go resources"
                } else {
                    "Monthly subscription"
                }
                .to_string(),
                if zh { tx_zh } else { tx_en }.to_string(),
                format!("{:016x}", rng.next()),
                date(day_index, hour),
                date(day_index, hour),
                if hour == 23 {
                    date(day_index + 1, 0)
                } else {
                    date(day_index, hour + 1)
                },
                format!("{}{:08x}", svc.prefix, rng.next() as u32 % 4096),
                instance_name,
                "S5.MEDIUM4".to_string(),
                "默认项目".to_string(),
                region_name.to_string(),
                zone.to_string(),
                "Compute".to_string(),
                format!("{} {}", svc.name, svc.unit),
                money(unit_e8),
                money(unit_e8 * discount_pct / 100),
                format!("USD/{}", svc.unit),
                format!("{}.{:02}", qty_e2 / 100, qty_e2 % 100),
                svc.unit.to_string(),
                "1".to_string(),
                "Hours".to_string(),
                money(list_e8),
                format!("0.{discount_pct:02}"),
                money(after_e8),
                if voucher {
                    money(total_e8)
                } else {
                    "0.00000000".to_string()
                },
                "USD".to_string(),
                "0.06".to_string(),
                money(tax_e8),
                money(total_e8),
                region_id.to_string(),
                format!("{y:04}-{m:02}"),
            ];
            csv_line(&mut line, fields.iter().map(|f| f.as_ref()));
            w.write_all(line.as_bytes()).map_err(io)?;
            stats.rows += 1;
            if voucher {
                stats.voucher_rows += 1;
            } else {
                stats.billed_cost_e8 += total_e8;
            }
        }
    }
    w.flush().map_err(io)?;
    Ok(stats)
}
