//! Interop with gguf-py (PyPI `gguf` 0.19): files written by gguf-py's GGUFWriter are read and
//! compared with gguf-py's own GGUFReader dump (tests/fixtures/*.json); our writer reproduces
//! them byte for byte; a Rust-written file is committed and its gguf-py dump checked.
//! Regenerate with tests/fixtures/make_fixtures.py (see tests/fixtures/README.md).

mod common;

use common::*;
use gguf_format::{Array, GgmlType, GgufFile, GgufModel, GgufWriter, Value};
use serde_json::Value as Json;

const PY_FILES: &[&str] = &[
    "py_all_types",
    "py_align64",
    "py_split-00001-of-00003",
    "py_split-00002-of-00003",
    "py_split-00003-of-00003",
];

/// Checks everything gguf-py's reader saw against our reader's view of the same file.
fn check_against_dump(file: &GgufFile, dump: &Json) {
    let name = dump["file"].as_str().unwrap();
    assert_eq!(
        file.version() as u64,
        dump["version"].as_u64().unwrap(),
        "{name}"
    );
    assert_eq!(
        file.alignment(),
        dump["alignment"].as_u64().unwrap(),
        "{name}"
    );
    assert_eq!(
        file.data_offset(),
        dump["data_offset"].as_u64().unwrap(),
        "{name}"
    );
    assert_eq!(
        file.file_size(),
        dump["file_size"].as_u64().unwrap(),
        "{name}"
    );

    let want = dump["metadata"].as_array().unwrap();
    assert_eq!(file.metadata().len(), want.len(), "{name}: metadata count");
    for ((key, value), kv) in file.metadata().iter().zip(want) {
        assert_eq!(key, kv["key"].as_str().unwrap(), "{name}: key order");
        assert_eq!(canon(value), canon(&json_to_value(kv)), "{name}: `{key}`");
        assert_eq!(canon(file.metadata().get(key).unwrap()), canon(value));
    }

    let want = dump["tensors"].as_array().unwrap();
    assert_eq!(file.tensors().len(), want.len(), "{name}: tensor count");
    for (t, w) in file.tensors().iter().zip(want) {
        assert_eq!(t.name, w["name"].as_str().unwrap());
        assert_eq!(
            t.ty.id() as u64,
            w["type_id"].as_u64().unwrap(),
            "{}",
            t.name
        );
        assert_eq!(t.ty.name(), Some(w["type"].as_str().unwrap()), "{}", t.name);
        let dims: Vec<u64> = w["dims"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        assert_eq!(t.dims, dims, "{}", t.name);
        assert_eq!(t.offset, w["offset"].as_u64().unwrap(), "{}", t.name);
        assert_eq!(t.n_bytes(), w["n_bytes"].as_u64(), "{}", t.name);
        let data = file.tensor_data(t).unwrap();
        assert_eq!(
            data,
            hex(w["data_hex"].as_str().unwrap()).as_slice(),
            "{}",
            t.name
        );
        assert_eq!(file.tensor(&t.name), Some(t));
    }
}

#[test]
fn reads_gguf_py_files_like_gguf_py_reader() {
    for stem in PY_FILES {
        let file = GgufFile::open(fixture(&format!("{stem}.gguf"))).unwrap();
        check_against_dump(&file, &load_json(&format!("{stem}.json")));
        // The same through the owned-buffer path.
        let bytes = std::fs::read(fixture(&format!("{stem}.gguf"))).unwrap();
        let owned = GgufFile::from_bytes(bytes).unwrap();
        check_against_dump(&owned, &load_json(&format!("{stem}.json")));
    }
}

#[test]
fn typed_getters_on_gguf_py_values() {
    let f = GgufFile::open(fixture("py_all_types.gguf")).unwrap();
    let m = f.metadata();
    assert_eq!(m.get_str("general.architecture").unwrap(), "gpt-oss");
    assert_eq!(m.get_u32("t.u32").unwrap(), 4_000_000_000);
    assert_eq!(m.get_u32("t.u16").unwrap(), 65000); // u16 widened
    assert_eq!(m.get_i32("t.i8").unwrap(), -100);
    assert!(m.get_u32("t.i8").is_err());
    assert_eq!(m.get_u64("t.u64").unwrap(), u64::MAX);
    assert_eq!(m.get_f32("t.f32").unwrap(), 150000.0);
    assert!(m.get_bool("t.bool_true").unwrap());
    assert_eq!(m.get_str("t.string").unwrap(), "Ġhello wörld — 日本語 🦀");
    assert_eq!(m.get_i32_array("t.arr_i32").unwrap(), [1, -3, 5, 3, 1, 1]);
    assert_eq!(m.get_str_array("t.arr_str").unwrap()[3], "ü");
    let nested = m.get_array("t.arr_nested2").unwrap();
    assert_eq!(nested.depth(), 3);
    assert_eq!(
        nested.get(1),
        Some(Value::Array(Array::Array(vec![Array::Bool(vec![
            true, false
        ])])))
    );
}

#[test]
fn writer_matches_gguf_py_byte_for_byte() {
    for stem in PY_FILES {
        let dump = load_json(&format!("{stem}.json"));
        let mut out = Vec::new();
        writer_from_dump(&dump)
            .write_to(&mut out, |_, _, _| Ok(()))
            .unwrap();
        let want = std::fs::read(fixture(&format!("{stem}.gguf"))).unwrap();
        assert_eq!(out.len(), want.len(), "{stem}: size");
        let first_diff = out.iter().zip(&want).position(|(a, b)| a != b);
        assert_eq!(first_diff, None, "{stem}: first differing byte");
    }
}

/// The whole model of gguf-py's split fixtures (metadata of the first shard less the split
/// keys, every tensor) written by `write_split` with gguf-py's policy reproduces each shard.
#[test]
fn split_writer_matches_gguf_py_byte_for_byte() {
    let model = GgufModel::open(fixture("py_split-00001-of-00003.gguf")).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in model.metadata().iter() {
        if !k.starts_with("split.") {
            w.add_kv(k, v.clone()).unwrap();
        }
    }
    for t in model.tensors() {
        let data = model.tensor_data(&t.name).unwrap().to_vec();
        w.add_tensor(t.name.clone(), &t.dims, t.ty, data).unwrap();
    }
    let dir = std::env::temp_dir().join(format!("gguf-split-interop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = gguf_format::SplitPolicy {
        max_tensors: Some(2),
        max_bytes: None,
    };
    let paths = w
        .write_split(dir.join("py_split.gguf"), policy, |_, _, _| Ok(()))
        .unwrap();
    assert_eq!(paths.len(), 3);
    for (i, p) in paths.iter().enumerate() {
        let name = format!("py_split-0000{}-of-00003.gguf", i + 1);
        assert_eq!(p.file_name().unwrap().to_str().unwrap(), name);
        let (ours, want) = (
            std::fs::read(p).unwrap(),
            std::fs::read(fixture(&name)).unwrap(),
        );
        assert_eq!(ours.len(), want.len(), "{name}: size");
        let first_diff = ours.iter().zip(&want).position(|(a, b)| a != b);
        assert_eq!(first_diff, None, "{name}: first differing byte");
    }
    // Split by bytes: t0..t4 are 16, 32, 48, 64, 80 bytes; at most 100 per shard.
    let policy = gguf_format::SplitPolicy {
        max_tensors: None,
        max_bytes: Some(100),
    };
    let paths = w
        .write_split(dir.join("by_size.gguf"), policy, |_, _, _| Ok(()))
        .unwrap();
    let shards: Vec<Vec<String>> = paths
        .iter()
        .map(|p| {
            GgufFile::open(p)
                .unwrap()
                .tensors()
                .iter()
                .map(|t| t.name.clone())
                .collect()
        })
        .collect();
    assert_eq!(shards, [vec!["t0", "t1", "t2"], vec!["t3"], vec!["t4"]]);
    let back = GgufModel::open(&paths[2]).unwrap();
    for t in model.tensors() {
        assert_eq!(
            back.tensor_data(&t.name).unwrap(),
            model.tensor_data(&t.name).unwrap()
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn opens_gguf_py_split_set_as_one_model() {
    // Any shard's name opens the whole set.
    for n in 1..=3 {
        let model = GgufModel::open(fixture(&format!("py_split-0000{n}-of-00003.gguf"))).unwrap();
        assert_eq!(model.shards().len(), 3);
        assert_eq!(model.tensor_count(), 5);
        assert_eq!(model.metadata().get_u32("gpt-oss.block_count").unwrap(), 1);
        let names: Vec<&str> = model.tensors().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["t0", "t1", "t2", "t3", "t4"]);
        let total: u64 = (1..=3)
            .map(|i| {
                std::fs::metadata(fixture(&format!("py_split-0000{i}-of-00003.gguf")))
                    .unwrap()
                    .len()
            })
            .sum();
        assert_eq!(model.file_size(), total);
    }
    let model = GgufModel::open(fixture("py_split-00001-of-00003.gguf")).unwrap();
    for i in 1..=3 {
        let dump = load_json(&format!("py_split-0000{i}-of-00003.json"));
        for t in dump["tensors"].as_array().unwrap() {
            let name = t["name"].as_str().unwrap();
            let data = model.tensor_data(name).unwrap();
            assert_eq!(
                data,
                hex(t["data_hex"].as_str().unwrap()).as_slice(),
                "{name}"
            );
            assert_eq!(model.shard_of(name), Some(i - 1));
        }
    }
    assert!(model
        .tensor_data("nope")
        .unwrap_err()
        .to_string()
        .contains("`nope`"));
}

/// The content of `rust_written.gguf`: every value type, nested arrays, non-ASCII, alignment 16,
/// tensors given up front and streamed.
fn rust_written() -> (GgufWriter, Vec<Vec<u8>>) {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", Value::String("gpt-oss".into()))
        .unwrap();
    w.set_alignment(16);
    let kvs = [
        ("r.u8", Value::U8(7)),
        ("r.i8", Value::I8(-7)),
        ("r.u16", Value::U16(60000)),
        ("r.i16", Value::I16(-30000)),
        ("r.u32", Value::U32(201088)),
        ("r.i32", Value::I32(-199998)),
        ("r.f32", Value::F32(1e-5)),
        ("r.bool", Value::Bool(true)),
        ("r.string", Value::String("Ġ<|channel|>ünïcödé 🦀".into())),
        ("r.u64", Value::U64(12_096_558_336)),
        ("r.i64", Value::I64(-5)),
        ("r.f64", Value::F64(-0.0)),
        ("r.arr_u8", Value::Array(Array::U8(vec![1, 2, 250]))),
        ("r.arr_i8", Value::Array(Array::I8(vec![-1, 2]))),
        ("r.arr_u16", Value::Array(Array::U16(vec![65535]))),
        ("r.arr_i16", Value::Array(Array::I16(vec![-2, 3]))),
        ("r.arr_u32", Value::Array(Array::U32(vec![4, 5]))),
        ("r.arr_i32", Value::Array(Array::I32(vec![1, 3, 5]))),
        (
            "r.arr_f32",
            Value::Array(Array::F32(vec![0.25, f32::MIN_POSITIVE])),
        ),
        ("r.arr_bool", Value::Array(Array::Bool(vec![false, true]))),
        (
            "r.arr_str",
            Value::Array(Array::String(vec!["Ġ Ġ".into(), "".into(), "日本".into()])),
        ),
        ("r.arr_u64", Value::Array(Array::U64(vec![u64::MAX]))),
        ("r.arr_i64", Value::Array(Array::I64(vec![i64::MIN]))),
        (
            "r.arr_f64",
            Value::Array(Array::F64(vec![std::f64::consts::PI])),
        ),
        (
            "r.arr_nested",
            Value::Array(Array::Array(vec![
                Array::U16(vec![1, 2]),
                Array::String(vec!["x".into()]),
                Array::Array(vec![Array::F32(vec![2.5])]),
            ])),
        ),
    ];
    for (k, v) in kvs {
        w.add_kv(k, v).unwrap();
    }
    let tensors: [(&str, &[u64], GgmlType); 6] = [
        ("token_embd.weight", &[64, 3], GgmlType::Q8_0),
        ("blk.0.attn_sinks.weight", &[5], GgmlType::F32),
        ("blk.0.ffn_up_exps.weight", &[32, 2, 2], GgmlType::MXFP4),
        ("blk.0.h", &[3, 3], GgmlType::F16),
        ("blk.0.bf", &[7], GgmlType::BF16),
        ("blk.0.attn_output.weight", &[256, 1], GgmlType::Q4_K),
    ];
    let mut datas = Vec::new();
    for (i, (name, dims, ty)) in tensors.into_iter().enumerate() {
        let n = ty.bytes_for(dims.iter().product()).unwrap() as usize;
        let data = rng.bytes(n);
        datas.push(data.clone());
        if i % 2 == 0 {
            w.add_tensor(name, dims, ty, data).unwrap();
        } else {
            w.add_tensor_info(name, dims, ty).unwrap();
        }
    }
    (w, datas)
}

#[test]
fn rust_written_fixture_matches_and_gguf_py_reads_it() {
    let (w, datas) = rust_written();
    let mut out = Vec::new();
    w.write_to(&mut out, |i, _info, sink| sink.write_all(&datas[i]))
        .unwrap();
    let path = fixture("rust_written.gguf");
    if std::env::var_os("GGUF_WRITE_FIXTURES").is_some() {
        std::fs::write(&path, &out).unwrap();
    }
    let committed = std::fs::read(&path).unwrap();
    assert!(
        committed == out,
        "rust_written.gguf is stale: rerun with GGUF_WRITE_FIXTURES=1"
    );

    // What gguf-py's reader made of our file equals what we put in.
    let dump = load_json("rust_written.json");
    let kvs = dump["metadata"].as_array().unwrap();
    assert_eq!(kvs.len(), w.metadata().len());
    for ((key, value), kv) in w.metadata().iter().zip(kvs) {
        assert_eq!(key, kv["key"].as_str().unwrap());
        assert_eq!(canon(value), canon(&json_to_value(kv)), "`{key}`");
    }
    assert_eq!(dump["alignment"].as_u64(), Some(16));
    let layout = w.layout().unwrap();
    let ts = dump["tensors"].as_array().unwrap();
    assert_eq!(ts.len(), layout.len());
    for ((info, t), data) in layout.iter().zip(ts).zip(&datas) {
        assert_eq!(info.name, t["name"].as_str().unwrap());
        assert_eq!(info.ty.id() as u64, t["type_id"].as_u64().unwrap());
        let dims: Vec<u64> = t["dims"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        assert_eq!(info.dims, dims);
        assert_eq!(info.offset, t["offset"].as_u64().unwrap());
        assert_eq!(&hex(t["data_hex"].as_str().unwrap()), data, "{}", info.name);
    }
    // And our reader agrees with gguf-py's.
    check_against_dump(&GgufFile::from_bytes(out).unwrap(), &dump);
}
