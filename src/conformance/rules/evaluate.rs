//! Evaluating compiled rules over a batch: every check is a boolean mask built with Arrow
//! kernels; only the rows a mask selects are turned into text (evidence) for the report.

use std::collections::{HashMap, HashSet};

use arrow_array::{Array, Int64Array, RecordBatch};
use arrow_buffer::BooleanBuffer;

use super::{bool_values, decimals, strings, timestamps, valid, Check, CompiledRule, Violations};

/// State a file carries from batch to batch (file-level rules).
#[derive(Debug, Default)]
pub struct FileState {
    /// Per rule index: the first value of columns[1] seen for each value of columns[0], and
    /// the line it was seen on.
    first_seen: HashMap<usize, HashMap<String, (String, u64)>>,
}

/// Rows of `batch` that break each rule. `lines` are the rows' source lines (for file-level
/// rules' evidence).
pub fn evaluate(
    rules: &[CompiledRule],
    batch: &RecordBatch,
    lines: Option<&Int64Array>,
    state: &mut FileState,
) -> Vec<Violations> {
    let n = batch.num_rows();
    let mut out = Vec::new();
    for (ri, rule) in rules.iter().enumerate() {
        let col = |i: usize| batch.column(i);
        let broken: BooleanBuffer = match &rule.check {
            Check::NotNull(i) => {
                if col(*i).null_count() == 0 {
                    continue;
                }
                !&valid(col(*i).as_ref())
            }
            Check::Null(i) => {
                if col(*i).null_count() == n {
                    continue;
                }
                valid(col(*i).as_ref())
            }
            Check::Allowed(i, set) => {
                let Some(c) = strings(col(*i)) else { continue };
                &valid(c) & &!&set.mask(c)
            }
            Check::Variant(i, set, _) => {
                let Some(c) = strings(col(*i)) else { continue };
                set.mask(c)
            }
            Check::Ordered(a, b) => {
                let (Some(x), Some(y)) = (timestamps(col(*a)), timestamps(col(*b))) else {
                    continue;
                };
                let (xv, yv) = (x.values(), y.values());
                let wrong = BooleanBuffer::collect_bool(n, |i| xv[i] >= yv[i]);
                &(&wrong & &valid(x)) & &valid(y)
            }
            Check::WholeMinutes(a, b) => {
                let (Some(x), Some(y)) = (timestamps(col(*a)), timestamps(col(*b))) else {
                    continue;
                };
                let (xv, yv) = (x.values(), y.values());
                let wrong = BooleanBuffer::collect_bool(n, |i| {
                    yv[i].wrapping_sub(xv[i]).rem_euclid(60_000_000) != 0
                });
                &(&wrong & &valid(x)) & &valid(y)
            }
            Check::PairedNull(a, b) => {
                let (x, y) = (col(*a), col(*b));
                if x.null_count() == 0 && y.null_count() == 0 {
                    continue;
                }
                &valid(x.as_ref()) ^ &valid(y.as_ref())
            }
            Check::NonNegative(i) => {
                let Some(c) = decimals(col(*i)) else { continue };
                let v = c.values();
                &BooleanBuffer::collect_bool(n, |r| v[r] < 0) & &valid(c)
            }
            Check::NotValue(i, value) => {
                let Some(c) = strings(col(*i)) else { continue };
                match arrow_ord::cmp::eq(c, &arrow_array::StringArray::new_scalar(value)) {
                    Ok(eq) => bool_values(&eq),
                    Err(_) => continue,
                }
            }
            Check::Value(i, value) => {
                let Some(c) = strings(col(*i)) else { continue };
                match arrow_ord::cmp::neq(c, &arrow_array::StringArray::new_scalar(value)) {
                    Ok(ne) => bool_values(&ne),
                    Err(_) => continue,
                }
            }
            Check::Zero(i) => {
                let Some(c) = decimals(col(*i)) else { continue };
                let v = c.values();
                &BooleanBuffer::collect_bool(n, |r| v[r] != 0) & &valid(c)
            }
            Check::Parent(child, parent, parents) => {
                let (Some(c), Some(p)) = (strings(col(*child)), strings(col(*parent))) else {
                    continue;
                };
                // One hash probe per row, like `Allowed` with many values.
                let wrong = BooleanBuffer::collect_bool(n, |r| {
                    parents
                        .get(c.value(r))
                        .is_some_and(|want| want != p.value(r))
                });
                &(&wrong & &valid(c)) & &valid(p)
            }
            Check::Product {
                result,
                a,
                b,
                rel,
                abs,
            } => {
                let (Some(r), Some(x), Some(y)) =
                    (decimals(col(*result)), decimals(col(*a)), decimals(col(*b)))
                else {
                    continue;
                };
                // A tolerance check, so f64 is precise enough; stored amounts stay decimal.
                let scale = 10f64.powi(r.scale() as i32);
                let (rv, xv, yv) = (r.values(), x.values(), y.values());
                let wrong = BooleanBuffer::collect_bool(n, |i| {
                    let got = rv[i] as f64 / scale;
                    let want = (xv[i] as f64 / scale) * (yv[i] as f64 / scale);
                    (got - want).abs() > abs.max(rel * want.abs())
                });
                &(&(&wrong & &valid(r)) & &valid(x)) & &valid(y)
            }
            Check::KeyValue(i) | Check::JsonObject(i) => {
                let Some(c) = strings(col(*i)) else { continue };
                let flat = matches!(rule.check, Check::KeyValue(_));
                // Tags repeat from row to row: judge each distinct text once per batch.
                let mut seen: HashMap<&str, bool> = HashMap::new();
                BooleanBuffer::collect_bool(n, |r| {
                    if c.is_null(r) {
                        return false;
                    }
                    let text = c.value(r);
                    *seen
                        .entry(text)
                        .or_insert_with(|| json_problem(text, flat).is_some())
                })
            }
            Check::PeriodOfName(i, lo, hi) => {
                let Some(c) = timestamps(col(*i)) else {
                    continue;
                };
                let v = c.values();
                &BooleanBuffer::collect_bool(n, |r| v[r] < *lo || v[r] >= *hi) & &valid(c)
            }
            Check::OneValuePer(k, d) => {
                let (Some(key), Some(dep)) = (strings(col(*k)), strings(col(*d))) else {
                    continue;
                };
                let seen = state.first_seen.entry(ri).or_default();
                let applies = rule.applies.mask(batch);
                let mut rows = Vec::new();
                let mut texts = Vec::new();
                for r in (&(&valid(key) & &valid(dep)) & &applies).set_indices() {
                    let line = lines.map(|l| l.value(r) as u64).unwrap_or(0);
                    // Looked up before inserting, so a key is copied once per file, not per row.
                    let (first, at) = match seen.get(key.value(r)) {
                        Some(entry) => entry,
                        None => seen
                            .entry(key.value(r).to_string())
                            .or_insert_with(|| (dep.value(r).to_string(), line)),
                    };
                    if first != dep.value(r) {
                        rows.push(r);
                        texts.push(format!(
                            "{:?} with {:?}, but with {first:?} on line {at}",
                            key.value(r),
                            dep.value(r)
                        ));
                    }
                }
                if !rows.is_empty() {
                    out.push(Violations {
                        rule: ri,
                        rows,
                        values: Some(texts),
                    });
                }
                continue;
            }
        };
        let broken = if rule.applies.is_always() {
            broken
        } else {
            &broken & &rule.applies.mask(batch)
        };
        if broken.count_set_bits() == 0 {
            continue;
        }
        let rows: Vec<usize> = broken.set_indices().collect();
        out.push(Violations {
            rule: ri,
            values: evidence(&rule.check, batch, &rows),
            rows,
        });
    }
    out
}

/// For rules whose broken cell alone does not say what is wrong, the text to report per row.
fn evidence(check: &Check, batch: &RecordBatch, rows: &[usize]) -> Option<Vec<String>> {
    let texts = |i: usize, f: &dyn Fn(&str) -> String| {
        strings(batch.column(i)).map(|c| rows.iter().map(|r| f(c.value(*r))).collect())
    };
    match check {
        Check::Variant(i, _, map) => texts(*i, &|v| {
            format!(
                "{v} (FOCUS: {})",
                map.get(v).map(String::as_str).unwrap_or("?")
            )
        }),
        Check::Parent(child, parent, parents) => {
            let (c, p) = (
                strings(batch.column(*child))?,
                strings(batch.column(*parent))?,
            );
            Some(
                rows.iter()
                    .map(|r| {
                        format!(
                            "{} under {} (its parent is {})",
                            c.value(*r),
                            p.value(*r),
                            parents.get(c.value(*r)).map(String::as_str).unwrap_or("?")
                        )
                    })
                    .collect(),
            )
        }
        Check::KeyValue(i) | Check::JsonObject(i) => {
            let flat = matches!(check, Check::KeyValue(_));
            texts(*i, &|v| {
                format!("{v} ({})", json_problem(v, flat).unwrap_or_default())
            })
        }
        _ => None,
    }
}

/// Why `text` is not a FOCUS JSON object (`flat`: Key-Value Format), or None if it is one.
pub fn json_problem(text: &str, flat: bool) -> Option<String> {
    use serde::de::{Deserializer, MapAccess, Visitor};
    struct Object {
        flat: bool,
    }
    impl<'de> Visitor<'de> for Object {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(
            self,
            mut map: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            let mut keys = HashSet::new();
            let mut problem = None;
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                let value: serde_json::Value = map.next_value()?;
                if problem.is_none() {
                    if !keys.insert(key.to_string()) {
                        problem = Some(format!("key {key:?} appears twice"));
                    } else if self.flat && (value.is_object() || value.is_array()) {
                        problem = Some(format!("key {key:?} holds a nested value"));
                    }
                }
            }
            Ok(problem)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let result = match (&mut de).deserialize_any(Object { flat }) {
        Ok(problem) => match de.end() {
            Ok(()) => problem,
            Err(_) => Some("text after the object".into()),
        },
        Err(e) if e.is_data() => Some("not a JSON object".into()),
        Err(e) => Some(format!("not valid JSON: {e}")),
    };
    result
}
