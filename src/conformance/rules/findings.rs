//! Rule ids, messages and default severities of what the decoder finds in raw text
//! ([`FindingKind`]): the decoder reports what it found, the rules module says what that means
//! for conformance. An inherent `impl` of the decoder's type, written here so the decoder needs
//! nothing of the rules (and callers keep writing `kind.rule_id(column)`).

use crate::ingest::decode::FindingKind;

use super::Severity;

impl FindingKind {
    /// The severity a finding has when the profile says nothing: a breach of the spec is an
    /// error; a documented rewrite by the mapping is a warning.
    pub fn default_severity(&self) -> Severity {
        match self {
            FindingKind::ZeroedByMapping => Severity::Warning,
            _ => Severity::Error,
        }
    }

    pub fn rule_id(&self, column: &str) -> String {
        format!("{self:?}.{column}")
    }

    pub fn message(&self, column: &str) -> String {
        match self {
            FindingKind::DateTimeFormat => format!("{column} must be written YYYY-MM-DDTHH:mm:ssZ"),
            FindingKind::NumericFormat => format!(
                "{column} must be in FOCUS Numeric Format (digits with an optional leading -, a . and an exponent such as E-7; no +, separators or units)"
            ),
            FindingKind::NullPlaceholder => format!(
                "{column} holds a placeholder for null; FOCUS leaves a null cell empty (read as null)"
            ),
            FindingKind::Type => format!("{column} must be a value of its FOCUS type"),
            FindingKind::Mapping => format!(
                "{column}: the native value is not in the mapping table (row kept, {column} null); add it to the mapping file"
            ),
            FindingKind::StrayQuote => format!(
                "{column} holds a quote the CSV is not quoting (a field with a \" must be quoted, the quote doubled)"
            ),
            FindingKind::ZeroedByMapping => format!(
                "{column} set to 0 by the mapping's zero_when (a voucher row: the voucher is already netted out of the rows it paid for); the native amount is the finding's value"
            ),
        }
    }
}
