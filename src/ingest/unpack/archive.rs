//! Zip archives: spilled to a temporary file, the central directory checked for duplicate
//! names, then every member judged by name and content and read through the size guards (see
//! the module docs of `unpack`).

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use super::{
    decompressed, member_content, peek, sniff, Compression, Guarded, Limits, MemberContent,
};
use crate::{Error, Result};

/// One central-directory entry as recorded, duplicates included.
struct RawEntry {
    name: Vec<u8>,
    crc32: u32,
    /// The 32-bit size field (`u32::MAX` when the real size is in a zip64 extra field).
    size: u32,
}

/// Every entry of the central directory starting at `start`, in order. The zip reader's index is
/// keyed by name and keeps only the last of several entries with one name, so the entries it
/// hides are found here, from the directory itself: a run of fixed 46-byte headers (signature
/// `50 4b 01 02`), each followed by its name, extra field and comment.
fn central_entries(file: &mut std::fs::File, start: u64) -> io::Result<Vec<RawEntry>> {
    file.seek(SeekFrom::Start(start))?;
    let mut reader = io::BufReader::new(file);
    let mut out = Vec::new();
    loop {
        let mut fixed = [0u8; 46];
        if reader.read_exact(&mut fixed).is_err() || fixed[..4] != [0x50, 0x4b, 0x01, 0x02] {
            return Ok(out);
        }
        let u16_at = |i: usize| u64::from(u16::from_le_bytes([fixed[i], fixed[i + 1]]));
        let u32_at =
            |i: usize| u32::from_le_bytes([fixed[i], fixed[i + 1], fixed[i + 2], fixed[i + 3]]);
        let mut name = Vec::new();
        (&mut reader).take(u16_at(28)).read_to_end(&mut name)?;
        io::copy(
            &mut (&mut reader).take(u16_at(30) + u16_at(32)),
            &mut io::sink(),
        )?;
        out.push(RawEntry {
            name,
            crc32: u32_at(16),
            size: u32_at(24),
        });
    }
}

/// A member's path components, split on either separator.
fn components(raw_name: &str) -> impl Iterator<Item = &str> {
    raw_name.split(['/', '\\']).filter(|c| !c.is_empty())
}

/// Whether a member is loaded, by its file name: `.csv` or `.csv.gz`, outside `__MACOSX/`.
fn is_csv_name(raw_name: &str) -> bool {
    let base = components(raw_name)
        .last()
        .unwrap_or("")
        .to_ascii_lowercase();
    (base.ends_with(".csv") || base.ends_with(".csv.gz"))
        && !components(raw_name).any(|c| c == "__MACOSX")
}

/// Rejects the zip if two central-directory entries that would be loaded share a name (see the
/// module docs for why), naming them and saying whether the copies are the same.
fn refuse_duplicates(spill: &mut std::fs::File, directory_start: u64) -> Result<()> {
    let entries = central_entries(spill, directory_start)
        .map_err(|e| Error::rejected(format!("not a readable zip (central directory: {e})")))?;
    let mut by_name: BTreeMap<&[u8], Vec<(usize, &RawEntry)>> = BTreeMap::new();
    for (i, entry) in entries.iter().enumerate() {
        by_name.entry(&entry.name).or_default().push((i + 1, entry));
    }
    for (name, copies) in by_name {
        let shown = String::from_utf8_lossy(name);
        if copies.len() < 2 || !is_csv_name(&shown) {
            continue;
        }
        let numbers: Vec<String> = copies.iter().map(|(i, _)| format!("#{i}")).collect();
        let first = copies[0].1;
        let same = copies
            .iter()
            .all(|(_, e)| e.crc32 == first.crc32 && e.size == first.size);
        let how = if same {
            "identical copies (same size and CRC-32): loading both would count this money twice"
                .to_string()
        } else {
            let sizes: Vec<String> = copies
                .iter()
                .map(|(_, e)| match e.size {
                    u32::MAX => "zip64".to_string(),
                    s => format!("{s} bytes"),
                })
                .collect();
            format!(
                "the copies differ ({}): the zip cannot say whether the later one replaces or adds to the earlier",
                sizes.join(" vs ")
            )
        };
        return Err(Error::rejected(format!(
            "zip holds {} members named {shown:?} (entries {}); {how}; refusing the whole zip rather than loading one of them silently",
            copies.len(),
            numbers.join(", ")
        )));
    }
    Ok(())
}

pub(super) fn zip_members(
    mut input: impl Read,
    key: &str,
    limits: &Limits,
    spill_dir: &Path,
    each: &mut dyn FnMut(&str, &mut dyn Read) -> Result<()>,
) -> Result<Vec<String>> {
    std::fs::create_dir_all(spill_dir).map_err(|e| Error::io(spill_dir, e))?;
    let mut spill = tempfile::tempfile_in(spill_dir).map_err(|e| Error::io(spill_dir, e))?;
    let copied = io::copy(&mut (&mut input).take(limits.max_zip_bytes + 1), &mut spill)
        .map_err(|e| Error::fetch(key, e.to_string()))?;
    if copied > limits.max_zip_bytes {
        return Err(Error::rejected(format!(
            "zip of more than {} bytes; raise the limit if this is a real bill",
            limits.max_zip_bytes
        )));
    }
    let mut directory = spill.try_clone().map_err(|e| Error::io(spill_dir, e))?;
    let mut archive = zip::ZipArchive::new(spill)
        .map_err(|e| Error::rejected(format!("not a readable zip (truncated or corrupt?): {e}")))?;
    if archive.has_duplicate_names() {
        refuse_duplicates(&mut directory, archive.central_directory_start())?;
    }
    drop(directory);

    // First the names: which members load, and under what name.
    let mut notes = Vec::new();
    let mut macosx = 0;
    let mut wanted = Vec::new(); // (index, raw name, file name)
    let mut contents: HashMap<(u32, u64), String> = HashMap::new();
    let mut forms: HashMap<String, String> = HashMap::new();
    for i in 0..archive.len() {
        let member = archive
            .by_index_data(i)
            .map_err(|e| Error::rejected(format!("zip member #{}: unreadable: {e}", i + 1)))?;
        let raw_name = member
            .name()
            .map(|n| n.to_string())
            .map_err(|e| Error::rejected(format!("zip member #{}: unreadable name: {e}", i + 1)))?;
        if member.enclosed_name().is_none() || components(&raw_name).any(|c| c == "..") {
            return Err(Error::rejected(format!(
                "zip member {raw_name:?} has a path that climbs out of the archive; refusing the whole zip"
            )));
        }
        let (is_dir, size, crc32) = (member.is_dir(), member.size(), member.crc32());
        drop(member);
        if is_dir {
            continue;
        }
        if components(&raw_name).any(|c| c == "__MACOSX") {
            macosx += 1;
            continue;
        }
        if !is_csv_name(&raw_name) {
            // Money must not hide behind a name: a member whose bytes are a bill is read
            // whatever it is called; one that cannot be read (a zip inside the zip, an .xlsx)
            // rejects the object rather than leave its rows out in silence.
            let head = if size == 0 {
                Vec::new()
            } else {
                let mut m = archive.by_index(i).map_err(|e| {
                    Error::rejected(format!("zip member {raw_name:?}: unreadable: {e}"))
                })?;
                let mut head = Vec::new();
                (&mut m)
                    .take(4096)
                    .read_to_end(&mut head)
                    .map_err(|e| Error::rejected(format!("zip member {raw_name:?}: {e}")))?;
                head
            };
            match member_content(&head) {
                MemberContent::Bill => {
                    notes.push(format!(
                        "zip member {raw_name:?} is read as a CSV bill: its content is one, whatever its name"
                    ));
                }
                MemberContent::Archive => {
                    return Err(Error::rejected(format!(
                        "zip member {raw_name:?} is itself a zip archive (a nested zip, or an .xlsx): billpipe does not read inside it, and a bill there would be left out; unpack it, or deliver its CSV"
                    )))
                }
                MemberContent::Other => {
                    notes.push(format!(
                        "skipped zip member {raw_name:?} (not a CSV by name or content)"
                    ));
                    continue;
                }
            }
        }
        // One bill twice under two names (`bill.csv` and `bill (1).csv`, or in two folders):
        // the same bytes loaded twice would count their money twice, and a month split into
        // parts never has two parts byte for byte alike. Refused like two members of one name.
        if size > 0 {
            if let Some(first) = contents.insert((crc32, size), raw_name.clone()) {
                return Err(Error::rejected(format!(
                    "zip members {first:?} and {raw_name:?} are identical copies (same size and CRC-32): loading both would count this money twice; refusing the whole zip rather than loading one of them silently"
                )));
            }
        }
        // One bill in two forms (`bill.csv` and `bill.csv.gz` beside it): different bytes, the
        // same rows; loading both would count them twice. Refused, naming both.
        let gz = raw_name.to_ascii_lowercase().ends_with(".gz");
        let plain = raw_name[..raw_name.len() - if gz { 3 } else { 0 }].to_string();
        if let Some(first) = forms.insert(plain, raw_name.clone()) {
            return Err(Error::rejected(format!(
                "zip members {first:?} and {raw_name:?} are one bill, plain and compressed: loading both would count this money twice; refusing the whole zip rather than loading one of them silently"
            )));
        }
        // Directory components are not ours to trust or use as paths: they only tell members
        // with the same file name apart.
        let base = components(&raw_name).last().unwrap_or("").to_string();
        wanted.push((i, raw_name, base));
    }
    if macosx > 0 {
        notes.push(format!(
            "skipped {macosx} zip member(s) under __MACOSX/ (macOS Finder metadata, not bills)"
        ));
    }
    let mut bases: HashMap<&str, usize> = HashMap::new();
    for (_, _, base) in &wanted {
        *bases.entry(base.as_str()).or_default() += 1;
    }
    let names: Vec<String> = wanted
        .iter()
        .map(|(_, raw_name, base)| match bases.get(base.as_str()) {
            Some(n) if *n > 1 => format!(
                "{key}#{}",
                components(raw_name).collect::<Vec<_>>().join("/")
            ),
            _ => format!("{key}#{base}"),
        })
        .collect();

    let mut csv_members = 0;
    for ((i, raw_name, _), name) in wanted.iter().zip(&names) {
        let mut member = archive
            .by_index(*i)
            .map_err(|e| Error::rejected(format!("zip member {raw_name:?}: unreadable: {e}")))?;
        let (size, packed) = (member.size(), member.compressed_size().max(1));
        if size > limits.max_bytes || size / packed > limits.max_ratio {
            return Err(Error::rejected(format!(
                "zip member {raw_name:?} would expand {} bytes to {size} ({}x; limits {} bytes, {}x): refusing a possible zip bomb",
                packed,
                size / packed,
                limits.max_bytes,
                limits.max_ratio
            )));
        }
        // The declared size is a claim; the bytes produced are held to it.
        let member_limits = Limits {
            max_bytes: size,
            ..limits.clone()
        };
        let mut checked = Guarded::new(&mut member, name, &member_limits).declared(packed);
        // The member's own first bytes decide, as an object's do.
        let prefix = peek(&mut checked).map_err(|e| Error::rejected(e.to_string()))?;
        let kind = sniff(&prefix);
        let mut content = io::Cursor::new(prefix).chain(&mut checked);
        decompressed(kind, &mut content, name, limits, each)?;
        if kind != Compression::Plain {
            notes.push(format!(
                "zip member {raw_name:?} is {}-compressed",
                kind.label()
            ));
        }
        csv_members += 1;
    }
    if csv_members == 0 {
        return Err(Error::rejected("zip holds no CSV member"));
    }
    notes.push(format!("zip with {csv_members} CSV member(s)"));
    Ok(notes)
}
