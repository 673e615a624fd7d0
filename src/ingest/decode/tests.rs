//! Unit tests of the decoder's line and quote accounting (the [`Guard`] against csv-core);
//! decimal and date-time parsing is tested in `values`.

use std::io::Read;

use csv::ByteRecord;

use super::guard::Guard;

/// Hands out at most `step` bytes per read, so states cross buffer boundaries.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// (start line, end line, fields) of every record, as the Guard logs them while csv reads
/// through it; asserts the two agree on the records and their field counts.
fn guard_records(data: &[u8], step: usize) -> (Vec<(u64, u64, usize)>, Guard<Trickle<'_>>) {
    let guard = Guard::new(Trickle { data, step }, 1 << 20, b',');
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(guard);
    let mut record = ByteRecord::new();
    let mut out = Vec::new();
    while reader.read_byte_record(&mut record).unwrap() {
        let at = reader
            .get_mut()
            .records
            .pop_front()
            .expect("a record per record");
        assert_eq!(
            at.delimiters + 1,
            record.len(),
            "{:?}",
            String::from_utf8_lossy(data)
        );
        out.push((at.start, at.end, record.len()));
    }
    assert!(reader.get_mut().records.is_empty());
    (out, reader.into_inner())
}

#[test]
fn lines_are_physical_lines_whatever_the_line_ends() {
    let long = "x".repeat(200);
    for (eol, name) in [("\n", "LF"), ("\r\n", "CRLF"), ("\r", "CR")] {
        let text = format!(
            "h1,h2{eol}a,b{eol}\"multi{eol}line\",c{eol}{eol}d,\"{long}\"{eol}\"{long}{eol}{long}\",e{eol}f,g"
        );
        for step in [1, 3, 64, 65, 8192] {
            let (records, _) = guard_records(text.as_bytes(), step);
            assert_eq!(
                records,
                vec![
                    (1, 1, 2),
                    (2, 2, 2),
                    (3, 4, 2),
                    (6, 6, 2),
                    (7, 8, 2),
                    (9, 9, 2)
                ],
                "{name}, reads of {step}"
            );
        }
    }
    // Mixed: CRLF, LF and CR in one file, and a CRLF split as \r | \n between reads.
    let text = b"h1,h2\r\na,b\nc,d\re,\"f\r\ng\"\r\nh,i";
    for step in 1..8 {
        let (records, _) = guard_records(text, step);
        assert_eq!(
            records,
            vec![(1, 1, 2), (2, 2, 2), (3, 3, 2), (4, 5, 2), (6, 6, 2)]
        );
    }
}

#[test]
fn the_guard_stays_in_step_with_the_parser_on_any_bytes() {
    // Random bytes from the alphabet that matters to CSV: the Guard must split records and
    // fields exactly as csv-core does, and its start line must be the line of the record's
    // first byte, counted independently here from the parser's byte positions.
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..4000 {
        // Every other round mostly plain text, so long runs take the Guard's fast path.
        let alphabet: &[u8] = match round % 2 {
            0 => b"ab,\"\r\n ",
            _ => b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa,,,,\"\r\n",
        };
        let len = (next() % 400) as usize;
        let data: Vec<u8> = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        let step = 1 + (next() % 70) as usize;
        let (records, guard) = guard_records(&data, step);
        // Independent: record starts from the parser, lines from the bytes.
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(data.as_slice());
        let mut record = ByteRecord::new();
        let mut i = 0;
        while reader.read_byte_record(&mut record).unwrap() {
            let mut at = record.position().unwrap().byte() as usize;
            while matches!(data.get(at), Some(b'\r' | b'\n')) {
                at += 1;
            }
            let before = &data[..at];
            let line = 1 + before
                .iter()
                .enumerate()
                .filter(|(j, b)| {
                    **b == b'\r' || (**b == b'\n' && (*j == 0 || before[j - 1] != b'\r'))
                })
                .count() as u64;
            assert_eq!(records[i].0, line, "{:?}", String::from_utf8_lossy(&data));
            i += 1;
        }
        assert_eq!(i, records.len());
        for r in &records {
            assert!(r.1 >= r.0 && r.0 <= guard.line);
        }
    }
}

#[test]
fn quotes_are_told_apart() {
    // A quote inside an unquoted field is text; the file does not end inside quotes.
    let (records, guard) = guard_records(b"a,b\n12\" disk,x\nc,d\n", 5);
    assert_eq!(records.len(), 3);
    assert!(guard.unterminated.is_none());
    let guard = Guard::new(&b"a,b\n12\" disk,x\nc,d\n"[..], 1 << 20, b',');
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(guard);
    let mut record = ByteRecord::new();
    let mut strays = Vec::new();
    while reader.read_byte_record(&mut record).unwrap() {
        let at = reader.get_mut().records.pop_front().unwrap();
        strays.push(at.stray.map(|s| (s.line, s.field, s.after_closing)));
    }
    assert_eq!(strays, vec![None, Some((2, 0, false)), None]);
    // A quote left open: where it opened, and the last line it swallowed.
    let (_, guard) = guard_records(b"a,b\r\nc,d\r\ne,\"{\"\"k\"\":1\r\nf,g\r\n", 4);
    let open = guard.unterminated.unwrap();
    assert_eq!((open.line, open.field, open.end), (3, 1, 4));
    // Doubled quotes and a quote after a closing quote.
    let guard = Guard::new(&b"\"x\"\"y\",\"12\" disk\",z\n"[..], 1 << 20, b',');
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(guard);
    assert!(reader.read_byte_record(&mut record).unwrap());
    let at = reader.get_mut().records.pop_front().unwrap();
    let stray = at.stray.unwrap();
    assert_eq!((stray.field, stray.after_closing), (1, true));
}

#[test]
fn long_lines_are_bounded_whatever_ends_them() {
    let mut text = b"a,b\r".to_vec();
    text.extend(std::iter::repeat_n(b'x', 300));
    let guard = Guard::new(text.as_slice(), 256, b',');
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(guard);
    let mut record = ByteRecord::new();
    let err = loop {
        match reader.read_byte_record(&mut record) {
            Ok(true) => continue,
            Ok(false) => panic!("a 300-byte line passed a 256-byte limit"),
            Err(e) => break e,
        }
    };
    assert!(err.to_string().contains("longer than 256 bytes"), "{err}");
    assert_eq!(reader.get_ref().line, 2);
    // CR-only lines are lines: a file of short CR lines passes.
    let text = "a,b\r".repeat(200);
    let (records, _) = guard_records(text.as_bytes(), 8192);
    assert_eq!(records.len(), 200);
}

/// The memo answers as the table does: for every raw spelling, first time or remembered, and
/// past its size limit; a value the table does not know is an error every time it is met.
#[test]
fn table_memo_answers_as_the_table_does() {
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::builders::{resolve, Looked, TableMemo};
    use super::layout::Source;

    let table: HashMap<String, Vec<u8>> = [("deduction", "Usage"), ("voucher deduction", "Credit")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    let source = Source::Table {
        field: 1,
        native: "Transaction Type".into(),
        values: Arc::new(table),
    };
    let answer = |memo: &mut TableMemo, raw: &str| {
        let record = ByteRecord::from(vec!["x", raw]);
        let expected = resolve(&source, &record).map(|v| v.map(<[u8]>::to_vec));
        let got = memo.look_up(&source, &record).map(|looked| match looked {
            Looked::Remembered(i) => Some(memo.value(i).to_vec()),
            Looked::Direct(v) => Some(v.to_vec()),
        });
        assert_eq!(got, expected, "{raw:?}");
        got
    };
    let mut memo = TableMemo::default();
    for raw in [
        "Deduction",
        "Deduction",
        " voucher DEDUCTION ",
        "Deduction",
        "Voucher deduction",
        "Voucher deduction",
        "Refund",
        "Refund",
        "Deduction",
    ] {
        let _checked_against_the_table = answer(&mut memo, raw);
    }
    assert!(answer(&mut memo, "Refund").is_err());
    // Past the limit of remembered spellings, answers still come from the table.
    for i in 0..TableMemo::MAX + 10 {
        let raw = format!("{}Deduction{}", " ".repeat(i % 7), " ".repeat(i / 7));
        assert_eq!(answer(&mut memo, &raw), Ok(Some(b"Usage".to_vec())));
    }
    assert_eq!(
        answer(&mut memo, "voucher deduction"),
        Ok(Some(b"Credit".to_vec()))
    );
    assert!(answer(&mut memo, "Refund").is_err());
}
