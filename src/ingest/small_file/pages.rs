//! A column chunk's pages (a PLAIN dictionary page where the column keeps a dictionary, then
//! one data page v1) and what the footer says of them, for the small-file encoder ([`super`]).

use super::{compact, ColumnData, ColumnPlan, Kind, Ordered};

/// What the footer says of one column chunk.
pub(super) struct Chunk<'a> {
    plan: &'a ColumnPlan,
    pub(super) start: i64,
    dictionary_offset: Option<i64>,
    data_offset: i64,
    pub(super) size: i64,
    values: i64,
    nulls: i64,
    min_max: Option<(Vec<u8>, Vec<u8>)>,
}

impl Chunk<'_> {
    pub(super) fn write(&self, w: &mut compact::Writer) {
        const PLAIN: i32 = 0;
        const RLE: i32 = 3;
        const RLE_DICTIONARY: i32 = 8;
        w.begin();
        // The deprecated offset of the column's metadata; parquet-rs writes 0 too.
        w.i64(2, 0);
        w.begin_struct(3);
        w.i32(1, self.plan.physical);
        let encodings: &[i32] = if self.dictionary_offset.is_some() {
            &[PLAIN, RLE, RLE_DICTIONARY]
        } else {
            &[PLAIN, RLE]
        };
        w.list(2, compact::I32, encodings.len());
        for e in encodings {
            w.varint(compact::zigzag(*e as i64));
        }
        w.list(3, compact::BINARY, 1);
        w.varint(self.plan.name.len() as u64);
        w.bytes(self.plan.name.as_bytes());
        w.i32(4, 0); // UNCOMPRESSED
        w.i64(5, self.values);
        w.i64(6, self.size);
        w.i64(7, self.size);
        w.i64(9, self.data_offset);
        if let Some(offset) = self.dictionary_offset {
            w.i64(11, offset);
        }
        if self.plan.statistics {
            w.begin_struct(12);
            w.i64(3, self.nulls);
            if let Some((min, max)) = &self.min_max {
                w.binary(5, max);
                w.binary(6, min);
                w.bool(7, true);
                w.bool(8, true);
            }
            w.end();
        }
        w.end();
        w.end();
    }
}

/// Writes one column's pages to `out` and says what the footer needs of them.
pub(super) fn write_chunk<'a>(
    out: &mut Vec<u8>,
    plan: &'a ColumnPlan,
    data: &ColumnData,
    rows: u64,
) -> Chunk<'a> {
    let start = out.len() as i64;
    let dictionary = plan.dictionary && !data.dictionary.is_empty();
    let mut dictionary_offset = None;
    if dictionary {
        dictionary_offset = Some(start);
        let mut header = compact::Writer::default();
        header.i32(1, 2); // DICTIONARY_PAGE
        header.i32(2, data.plain.len() as i32);
        header.i32(3, data.plain.len() as i32);
        header.begin_struct(7);
        header.i32(1, data.dictionary.len() as i32);
        header.i32(2, 0); // PLAIN
        header.end();
        header.end();
        out.extend_from_slice(&header.into_bytes());
        out.extend_from_slice(&data.plain);
    }
    let data_offset = out.len() as i64;
    let mut body = Vec::new();
    if plan.optional {
        let mut levels = Vec::new();
        for &(defined, n) in &data.levels {
            compact::uvarint(&mut levels, (n as u64) << 1);
            levels.push(defined as u8);
        }
        body.extend_from_slice(&(levels.len() as u32).to_le_bytes());
        body.extend_from_slice(&levels);
    }
    if dictionary {
        let width = (32 - (data.dictionary.len() as u32 - 1).leading_zeros()).max(1) as usize;
        body.push(width as u8);
        compact::bit_packed(&mut body, &data.indices, width);
    } else {
        body.extend_from_slice(&data.plain);
    }
    let mut header = compact::Writer::default();
    header.i32(1, 0); // DATA_PAGE
    header.i32(2, body.len() as i32);
    header.i32(3, body.len() as i32);
    header.begin_struct(5);
    header.i32(1, rows as i32);
    header.i32(2, if dictionary { 8 } else { 0 }); // RLE_DICTIONARY or PLAIN
    header.i32(3, 3); // definition levels: RLE
    header.i32(4, 3); // repetition levels: RLE
    header.end();
    header.end();
    out.extend_from_slice(&header.into_bytes());
    out.extend_from_slice(&body);
    let order_bytes = |v: Ordered| match (plan.kind, v) {
        (Kind::Decimal { len }, Ordered::Signed(x)) => x.to_be_bytes()[16 - len..].to_vec(),
        (Kind::Int32 { .. }, Ordered::Signed(x)) => (x as i32).to_le_bytes().to_vec(),
        (Kind::Int32 { .. }, Ordered::Unsigned(x)) => (x as u32).to_le_bytes().to_vec(),
        (_, Ordered::Signed(x)) => (x as i64).to_le_bytes().to_vec(),
        (_, Ordered::Unsigned(x)) => x.to_le_bytes().to_vec(),
    };
    Chunk {
        plan,
        start,
        dictionary_offset,
        data_offset,
        size: out.len() as i64 - start,
        values: rows as i64,
        nulls: data.nulls as i64,
        min_max: data
            .min_max
            .map(|(lo, hi)| (order_bytes(lo), order_bytes(hi))),
    }
}
