//! The FOCUS generator: Tencent's FOCUS CSV snapshots (column set, gaps, spellings, Beijing
//! month bounds written in UTC), one function of (seed, account, month, day, row).

use std::io::Write;

use crate::{Error, Result};

use super::{
    csv_line, hash_str, money, month_of, utc_of_beijing, GenerateOptions, GenerateStats, Rng, ENVS,
    NAMES, REGIONS, SERVICES,
};

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

/// Writes one FOCUS CSV snapshot (CRLF line ends, as Windows-made bills have).
pub fn write_focus_csv(opts: &GenerateOptions, out: impl Write) -> Result<GenerateStats> {
    let month = month_of(&opts.month)?;
    let days = month.days();
    let through = opts.through_day.unwrap_or(days).min(days);
    let first_day = month.first_day();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::object_name;

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
