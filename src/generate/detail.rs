//! The native generator: Tencent's detail bills (English or zh_cn headers and values,
//! Beijing-time date-times), for the mapping tests and examples.

use std::io::Write;

use crate::values::{days_from_civil, year_month_from_days};
use crate::{Error, Result};

use super::{
    csv_line, hash_str, money, month_of, GenerateOptions, Rng, ENVS, NAMES, REGIONS, SERVICES,
};

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

impl DetailStats {
    /// Counts a row [`detail_row`] wrote.
    pub(super) fn add(&mut self, (total_e8, voucher): (i128, bool)) {
        self.rows += 1;
        if voucher {
            self.voucher_rows += 1;
        } else {
            self.billed_cost_e8 += total_e8;
        }
    }
}

/// Writes a native Tencent detail bill (Beijing-time date-times, `zh` for Chinese headers and
/// values). Rows are a pure function of (seed, account, day, row), like the FOCUS generator.
pub fn write_detail_csv(opts: &GenerateOptions, zh: bool, out: impl Write) -> Result<DetailStats> {
    let month = month_of(&opts.month)?;
    let (y, m) = (month.year(), month.month());
    let days = month.days();
    let through = opts.through_day.unwrap_or(days).min(days);
    let first_day = month.first_day();
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
            let row = detail_row(opts, acct_hash, (y, m), zh, day_index, r, &mut line);
            w.write_all(line.as_bytes()).map_err(io)?;
            stats.add(row);
        }
    }
    w.flush().map_err(io)?;
    Ok(stats)
}

/// One detail-bill row of `opts.account` (hash `acct_hash`), bill month `(y, m)`, day
/// `day_index`, row `r`, formatted into `line`; returns its Total Cost and whether it is a
/// voucher row (whose BilledCost is 0).
pub(super) fn detail_row(
    opts: &GenerateOptions,
    acct_hash: u64,
    (y, m): (i64, u32),
    zh: bool,
    day_index: i64,
    r: u64,
    line: &mut String,
) -> (i128, bool) {
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
        let (yy, mm) = year_month_from_days(d);
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
    csv_line(line, fields.iter().map(|f| f.as_ref()));
    (total_e8, voucher)
}
