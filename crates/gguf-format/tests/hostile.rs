//! Hostile and malformed input: every case must give an `Err` with a clear message (asserted in
//! part), never a panic, and never an allocation sized by an unchecked count.

mod common;

use common::fixture;
use gguf_format::{Error, GgmlType, GgufFile, GgufModel, GgufWriter, Value};

/// A hand-built GGUF byte stream.
struct Raw(Vec<u8>);

impl Raw {
    fn new(version: u32, n_tensors: u64, n_kv: u64) -> Self {
        let mut r = Raw(b"GGUF".to_vec());
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    fn str(&mut self, s: &[u8]) -> &mut Self {
        self.u64(s.len() as u64).bytes(s)
    }
    fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.str(key.as_bytes()).u32(4).u32(v)
    }
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name.as_bytes()).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    /// Pads to `align` and appends `n` bytes of (nonzero) data.
    fn data(&mut self, align: usize, n: usize) -> &mut Self {
        while !self.0.len().is_multiple_of(align) {
            self.0.push(0);
        }
        self.0.extend((0..n).map(|i| (i * 7 + 1) as u8));
        self
    }
    fn parse(&self) -> gguf_format::Result<GgufFile> {
        GgufFile::from_bytes(self.0.clone())
    }
}

/// Parses and asserts an error whose message contains every one of `parts`.
#[track_caller]
fn err_with(r: &Raw, parts: &[&str]) -> Error {
    let e = r.parse().expect_err("hostile input was accepted");
    let msg = e.to_string();
    for p in parts {
        assert!(msg.contains(p), "error {msg:?} lacks {p:?}");
    }
    e
}

#[test]
fn every_truncation_of_a_valid_file_is_an_error() {
    for name in ["py_all_types.gguf", "rust_written.gguf"] {
        let full = std::fs::read(fixture(name)).unwrap();
        let file = GgufFile::from_bytes(full.clone()).unwrap();
        // Bytes after the last tensor's data are only padding: dropping them loses nothing.
        let data_end = file
            .tensors()
            .iter()
            .map(|t| file.data_offset() + t.offset + t.n_bytes().unwrap())
            .max()
            .unwrap();
        let header_end = file.data_offset();
        for len in 0..full.len() {
            let res = GgufFile::from_bytes(full[..len].to_vec());
            if (len as u64) < data_end {
                let msg = res.expect_err("truncated file accepted").to_string();
                if (len as u64) < header_end.saturating_sub(32) {
                    assert!(
                        msg.contains("remain in the file")
                            || msg.contains("bad magic")
                            || msg.contains("magic"),
                        "{len}: {msg}"
                    );
                } else if (len as u64) >= header_end {
                    assert!(msg.contains("lie outside the file"), "{len}: {msg}");
                }
            } else {
                assert!(
                    res.is_ok(),
                    "{name}: prefix {len} drops only trailing padding"
                );
            }
        }
    }
}

#[test]
fn huge_counts_and_lengths_fail_before_allocating() {
    err_with(
        &Raw::new(3, 1 << 60, 0),
        &["header counts (1152921504606846976 tensors", "remain"],
    );
    err_with(
        &Raw::new(3, 0, u64::MAX),
        &["18446744073709551615 metadata pairs"],
    );
    let mut r = Raw::new(3, 0, 1);
    r.u64(1 << 63).bytes(&[b'k'; 16]);
    err_with(
        &r,
        &["metadata pair 0 key", "needs 9223372036854775808 bytes"],
    );
    let mut r = Raw::new(3, 0, 1);
    r.str(b"k").u32(8).u64(u64::MAX - 3);
    err_with(
        &r,
        &["metadata key `k` value", "needs 18446744073709551612 bytes"],
    );
    for elem in [4u32, 8, 9, 7] {
        let mut r = Raw::new(3, 0, 1);
        r.str(b"arr").u32(9).u32(elem).u64(1 << 62).bytes(&[1; 64]);
        err_with(
            &r,
            &[
                "metadata key `arr` value",
                "of 4611686018427387904 elements",
            ],
        );
    }
    // A tensor name length that runs past the end.
    let mut r = Raw::new(3, 1, 0);
    r.u64(1 << 40).bytes(&[b'a'; 40]);
    err_with(&r, &["tensor info 0 name", "needs 1099511627776 bytes"]);
}

#[test]
fn nesting_depth_is_limited() {
    let nested = |depth: usize| {
        let mut r = Raw::new(3, 0, 1);
        r.str(b"deep").u32(9);
        for _ in 0..depth - 1 {
            r.u32(9).u64(1);
        }
        r.u32(0).u64(1).bytes(&[5]);
        r
    };
    let ok = nested(gguf_format::MAX_ARRAY_DEPTH).parse().unwrap();
    assert_eq!(
        ok.metadata().get_array("deep").unwrap().depth(),
        gguf_format::MAX_ARRAY_DEPTH
    );
    err_with(
        &nested(gguf_format::MAX_ARRAY_DEPTH + 1),
        &["`deep`", "nested deeper than 8"],
    );
    // Far deeper than the stack could take if we recursed before checking.
    let mut r = Raw::new(3, 0, 1);
    r.str(b"deep").u32(9);
    for _ in 0..100_000 {
        r.u32(9).u64(1);
    }
    err_with(&r, &["nested deeper"]);
}

#[test]
fn bad_value_type_ids() {
    let mut r = Raw::new(3, 0, 1);
    r.str(b"k").u32(13).u32(0);
    err_with(&r, &["`k`", "invalid metadata value type id 13"]);
    let mut r = Raw::new(3, 0, 1);
    r.str(b"k").u32(9).u32(0xdead_beef).u64(0);
    err_with(&r, &["invalid metadata value type id 3735928559"]);
    let mut r = Raw::new(3, 0, 1);
    r.str(b"flag").u32(7).bytes(&[2]);
    err_with(&r, &["`flag`", "invalid bool byte 2"]);
}

#[test]
fn unknown_tensor_types_are_listed_but_have_no_data() {
    let mut r = Raw::new(3, 2, 0);
    r.tensor("weird", &[32, 2], 4, 0).tensor("ok", &[4], 0, 0);
    r.data(32, 16);
    let f = r.parse().unwrap();
    assert_eq!(f.tensors()[0].ty, GgmlType::Unknown(4));
    assert_eq!(f.tensors()[0].n_bytes(), None);
    let e = f.tensor_data(&f.tensors()[0]).unwrap_err().to_string();
    assert!(
        e.contains("`weird`") && e.contains("unknown ggml type id 4"),
        "{e}"
    );
    assert_eq!(f.tensor_data(&f.tensors()[1]).unwrap().len(), 16);
    // An unknown type's offset must still lie in the file.
    let mut r = Raw::new(3, 1, 0);
    r.tensor("weird", &[32], 1000, 1 << 20).data(32, 0);
    err_with(&r, &["`weird`", "outside the file"]);
}

#[test]
fn tensor_ranges_are_checked() {
    let mut r = Raw::new(3, 1, 0);
    r.tensor("t", &[4], 0, 4).data(32, 64);
    err_with(
        &r,
        &["`t`", "data offset 4 is not a multiple of the alignment 32"],
    );
    let mut r = Raw::new(3, 1, 0);
    r.tensor("t", &[16], 0, 32).data(32, 64);
    err_with(&r, &["`t`", "lie outside the file"]);
    let mut r = Raw::new(3, 1, 0);
    r.tensor("t", &[16], 0, u64::MAX - 31).data(32, 64);
    err_with(&r, &["`t`", "lie outside the file"]);
    let mut r = Raw::new(3, 3, 0);
    r.tensor("a", &[8], 0, 0)
        .tensor("b", &[16], 0, 64)
        .tensor("c", &[16], 0, 32);
    r.data(32, 160);
    err_with(&r, &["`c` (data 32..96) and `b` (data 64..128) overlap"]);
    // Touching but not overlapping is fine.
    let mut r = Raw::new(3, 2, 0);
    r.tensor("a", &[8], 0, 0)
        .tensor("b", &[8], 0, 32)
        .data(32, 64);
    assert!(r.parse().is_ok());
}

#[test]
fn invalid_utf8_is_an_error() {
    let mut r = Raw::new(3, 0, 1);
    r.str(b"bad\xff").u32(4).u32(1);
    err_with(&r, &["metadata pair 0 key", "invalid UTF-8"]);
    let mut r = Raw::new(3, 0, 1);
    r.str(b"k").u32(8).str(b"\xc3\x28");
    err_with(&r, &["`k`", "invalid UTF-8"]);
    let mut r = Raw::new(3, 0, 1);
    r.str(b"toks")
        .u32(9)
        .u32(8)
        .u64(2)
        .str(b"ok")
        .str(b"\xe2\x82");
    err_with(&r, &["`toks`", "invalid UTF-8"]);
    let mut r = Raw::new(3, 1, 0);
    r.tensor("x\u{80}", &[4], 0, 0);
    r.0[32] = 0xff; // corrupt the name's bytes
    err_with(&r, &["tensor info 0 name", "invalid UTF-8"]);
}

#[test]
fn versions_magic_and_endianness() {
    err_with(&Raw::new(1, 0, 0), &["unsupported GGUF version 1", "v1"]);
    err_with(&Raw::new(4, 0, 0), &["unsupported GGUF version 4"]);
    err_with(&Raw::new(0, 0, 0), &["unsupported GGUF version 0"]);
    err_with(
        &Raw::new(3u32.swap_bytes(), 0, 0),
        &["big-endian", "byte-swapped 3"],
    );
    err_with(
        &Raw::new(2u32.swap_bytes(), 0, 0),
        &["big-endian", "byte-swapped 2"],
    );
    let mut r = Raw::new(3, 0, 0);
    r.0[..4].copy_from_slice(b"GGML");
    err_with(&r, &["bad magic", "47 47 55 46"]);
    err_with(
        &Raw(b"GG".to_vec()),
        &["magic", "needs 4 bytes but only 2 remain"],
    );
    err_with(&Raw(Vec::new()), &["magic"]);
    // v2 is accepted.
    assert_eq!(Raw::new(2, 0, 0).parse().unwrap().version(), 2);
}

#[test]
fn bad_dims() {
    let mut r = Raw::new(3, 1, 0);
    r.tensor("z", &[4, 0], 0, 0).data(32, 0);
    err_with(&r, &["`z`", "zero-length dimension in dims [4, 0]"]);
    let mut r = Raw::new(3, 1, 0);
    r.tensor("five", &[1, 1, 1, 1, 1], 0, 0).data(32, 4);
    err_with(&r, &["`five`", "5 dimensions, at most 4"]);
    let mut r = Raw::new(3, 1, 0);
    r.str(b"many").u32(u32::MAX).bytes(&[0; 64]);
    err_with(&r, &["`many`", "4294967295 dimensions"]);
    let mut r = Raw::new(3, 1, 0);
    r.tensor("big", &[1 << 32, 1 << 32], 0, 0).data(32, 4);
    err_with(&r, &["`big`", "overflows"]);
    let mut r = Raw::new(3, 1, 0);
    r.tensor("big", &[1 << 62, 2], 0, 0).data(32, 4);
    err_with(&r, &["`big`", "must fit in i64"]);
    let mut r = Raw::new(3, 1, 0);
    r.tensor("q", &[33, 2], 8, 0).data(32, 68);
    err_with(
        &r,
        &[
            "`q`",
            "ne0 = 33 is not a multiple of the Q8_0 block size 32",
        ],
    );
}

#[test]
fn duplicates_and_alignment() {
    let mut r = Raw::new(3, 0, 2);
    r.kv_u32("k", 1).kv_u32("k", 2);
    err_with(&r, &["duplicate metadata key `k`"]);
    let mut r = Raw::new(3, 2, 0);
    r.tensor("t", &[8], 0, 0)
        .tensor("t", &[8], 0, 32)
        .data(32, 64);
    err_with(&r, &["duplicate tensor name `t`"]);
    for bad in [0u32, 48, 3] {
        let mut r = Raw::new(3, 0, 1);
        r.kv_u32("general.alignment", bad);
        err_with(&r, &["invalid `general.alignment`", &format!("u32 {bad}")]);
    }
    let mut r = Raw::new(3, 0, 1);
    r.str(b"general.alignment").u32(10).u64(64);
    err_with(&r, &["invalid `general.alignment`: u64 64"]);
    // A valid custom alignment moves the data section.
    let mut r = Raw::new(3, 1, 1);
    r.kv_u32("general.alignment", 128)
        .tensor("t", &[4], 0, 0)
        .data(128, 16);
    let f = r.parse().unwrap();
    assert_eq!((f.alignment(), f.data_offset()), (128, 128));
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("gguf-format-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn shard(dir: &std::path::Path, name: &str, kvs: &[(&str, Value)], tensors: &[&str]) {
    let mut w = GgufWriter::new();
    for (k, v) in kvs {
        w.add_kv(*k, v.clone()).unwrap();
    }
    for t in tensors {
        w.add_tensor(*t, &[2], GgmlType::F32, vec![1; 8]).unwrap();
    }
    w.write_file(dir.join(name), |_, _, _| Ok(())).unwrap();
}

#[test]
fn split_set_errors() {
    let d = temp_dir("split");
    let n = |i: u16| [("split.no", Value::U16(i)), ("split.count", Value::U16(2))];
    shard(&d, "m-00001-of-00002.gguf", &n(0), &["a"]);
    let e = GgufModel::open(d.join("m-00001-of-00002.gguf"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("m-00002-of-00002.gguf") && e.contains("shard 2 of 2 is missing"),
        "{e}"
    );
    shard(&d, "m-00002-of-00002.gguf", &n(0), &["b"]);
    let e = GgufModel::open(d.join("m-00002-of-00002.gguf"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("split.no is 0, expected 1"), "{e}");
    shard(&d, "m-00002-of-00002.gguf", &n(1), &["a"]);
    let e = GgufModel::open(d.join("m-00001-of-00002.gguf"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("duplicate tensor name `a` (in shards 1 and 2)"),
        "{e}"
    );
    shard(
        &d,
        "m-00002-of-00002.gguf",
        &[("split.count", Value::U16(3))],
        &["b"],
    );
    let e = GgufModel::open(d.join("m-00001-of-00002.gguf"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("split.count is 3, the file name says 2"), "{e}");
    shard(&d, "m-00002-of-00002.gguf", &n(1), &["b"]);
    let m = GgufModel::open(d.join("m-00001-of-00002.gguf")).unwrap();
    assert_eq!(m.tensor_count(), 2);
    // A shard renamed so its name no longer says it is part of a set.
    std::fs::copy(d.join("m-00001-of-00002.gguf"), d.join("renamed.gguf")).unwrap();
    let e = GgufModel::open(d.join("renamed.gguf"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("one of 2 shards"), "{e}");
    let e = GgufModel::open(d.join("absent.gguf"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("open") && e.contains("absent.gguf"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn writer_refuses_bad_input() {
    let mut w = GgufWriter::new();
    w.add_kv("k", Value::U8(1)).unwrap();
    assert!(w
        .add_kv("k", Value::U8(2))
        .unwrap_err()
        .to_string()
        .contains("duplicate metadata key `k`"));
    w.add_tensor("t", &[4], GgmlType::F32, vec![1; 16]).unwrap();
    let e = w
        .add_tensor("t", &[4], GgmlType::F32, vec![1; 16])
        .unwrap_err()
        .to_string();
    assert!(e.contains("duplicate tensor name `t`"), "{e}");
    let e = w
        .add_tensor("u", &[4], GgmlType::F32, vec![1; 15])
        .unwrap_err()
        .to_string();
    assert!(e.contains("`u`: data has 15 bytes, expected 16"), "{e}");
    let e = w
        .add_tensor_info("q", &[30], GgmlType::Q8_0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a multiple"), "{e}");
    let e = w
        .add_tensor_info("x", &[32], GgmlType::Unknown(4))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown ggml type id 4"), "{e}");
    w.add_tensor_info("s", &[32], GgmlType::Q8_0).unwrap();
    let e = w
        .write_to(Vec::new(), |_, _, out| out.write_all(&[1; 33]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`s`: fill wrote 33 bytes, expected 34"), "{e}");
    w.set_alignment(24);
    let e = w
        .write_to(Vec::new(), |_, _, out| out.write_all(&[1; 34]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid `general.alignment`: u32 24"), "{e}");
    w.set_alignment(8);
    let mut out = Vec::new();
    w.write_to(&mut out, |_, _, o| o.write_all(&[1; 34]))
        .unwrap();
    let f = GgufFile::from_bytes(out).unwrap();
    assert_eq!(f.alignment(), 8);
    assert_eq!(f.tensor_data(f.tensor("s").unwrap()).unwrap(), [1; 34]);
}
