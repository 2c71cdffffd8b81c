//! Property tests: random metadata and tensors survive write -> read exactly; arbitrary and
//! mutated bytes never panic the parser, and a file that opens always yields its tensor bytes.

mod common;

use common::{canon, fixture};
use gguf_format::{Array, GgmlType, GgufFile, GgufWriter, Value};
use proptest::prelude::*;

fn string() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..10).prop_map(String::from_iter)
}

fn leaf_array() -> impl Strategy<Value = Array> {
    use prop::collection::vec;
    prop_oneof![
        vec(any::<u8>(), 0..6).prop_map(Array::U8),
        vec(any::<i8>(), 0..6).prop_map(Array::I8),
        vec(any::<u16>(), 0..6).prop_map(Array::U16),
        vec(any::<i16>(), 0..6).prop_map(Array::I16),
        vec(any::<u32>(), 0..6).prop_map(Array::U32),
        vec(any::<i32>(), 0..6).prop_map(Array::I32),
        vec(any::<f32>(), 0..6).prop_map(Array::F32),
        vec(any::<bool>(), 0..6).prop_map(Array::Bool),
        vec(string(), 0..6).prop_map(Array::String),
        vec(any::<u64>(), 0..6).prop_map(Array::U64),
        vec(any::<i64>(), 0..6).prop_map(Array::I64),
        vec(any::<f64>(), 0..6).prop_map(Array::F64),
    ]
}

fn array() -> impl Strategy<Value = Array> {
    leaf_array().prop_recursive(3, 24, 4, |inner| {
        prop::collection::vec(inner, 0..4).prop_map(Array::Array)
    })
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u8>().prop_map(Value::U8),
        any::<i8>().prop_map(Value::I8),
        any::<u16>().prop_map(Value::U16),
        any::<i16>().prop_map(Value::I16),
        any::<u32>().prop_map(Value::U32),
        any::<i32>().prop_map(Value::I32),
        any::<f32>().prop_map(Value::F32),
        any::<bool>().prop_map(Value::Bool),
        string().prop_map(Value::String),
        any::<u64>().prop_map(Value::U64),
        any::<i64>().prop_map(Value::I64),
        any::<f64>().prop_map(Value::F64),
        array().prop_map(Value::Array),
    ]
}

const TYPES: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q5_1,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
    GgmlType::MXFP4,
    GgmlType::I32,
];

/// (type, dims in GGUF order, data, streamed?)
fn tensor() -> impl Strategy<Value = (GgmlType, Vec<u64>, Vec<u8>, bool)> {
    (
        prop::sample::select(TYPES),
        1u64..3,
        prop::collection::vec(1u64..4, 0..4),
        any::<bool>(),
    )
        .prop_flat_map(|(ty, blocks, rest, streamed)| {
            let mut dims = vec![blocks * ty.block_size().unwrap()];
            dims.extend(rest);
            let n = ty.bytes_for(dims.iter().product()).unwrap() as usize;
            (
                Just(ty),
                Just(dims),
                prop::collection::vec(any::<u8>(), n),
                Just(streamed),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn write_then_read_round_trips(
        kvs in prop::collection::vec((string(), value()), 0..8),
        tensors in prop::collection::vec(tensor(), 0..6),
        alignment in prop::option::of(prop::sample::select(vec![1u32, 2, 8, 16, 32, 64, 256])),
    ) {
        let mut w = GgufWriter::new();
        for (i, (k, v)) in kvs.iter().enumerate() {
            w.add_kv(format!("k{i}.{k}"), v.clone()).unwrap();
        }
        if let Some(a) = alignment {
            w.set_alignment(a);
        }
        for (i, (ty, dims, data, streamed)) in tensors.iter().enumerate() {
            let name = format!("blk.{i}.w");
            if *streamed {
                w.add_tensor_info(name, dims, *ty).unwrap();
            } else {
                w.add_tensor(name, dims, *ty, data.clone()).unwrap();
            }
        }
        let mut out = Vec::new();
        w.write_to(&mut out, |i, info, sink| {
            assert!(tensors[i].3, "fill called for a tensor given up front");
            assert_eq!(info.dims, tensors[i].1);
            sink.write_all(&tensors[i].2)
        }).unwrap();

        let f = GgufFile::from_bytes(out).unwrap();
        let align = u64::from(alignment.unwrap_or(32));
        prop_assert_eq!(f.version(), 3);
        prop_assert_eq!(f.alignment(), align);
        prop_assert_eq!(f.data_offset() % align, 0);
        prop_assert_eq!(f.file_size() % align, 0);
        let got: Vec<(String, String)> = f.metadata().iter().map(|(k, v)| (k.to_string(), canon(v))).collect();
        let want: Vec<(String, String)> = w.metadata().iter().map(|(k, v)| (k.to_string(), canon(v))).collect();
        prop_assert_eq!(got, want);
        let layout = w.layout().unwrap();
        prop_assert_eq!(f.tensors(), layout.as_slice());
        for (t, (ty, dims, data, _)) in f.tensors().iter().zip(&tensors) {
            prop_assert_eq!(t.ty, *ty);
            prop_assert_eq!(&t.dims, dims);
            prop_assert_eq!(f.tensor_data(t).unwrap(), data.as_slice());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = GgufFile::from_bytes(bytes.clone());
        // The same behind a valid magic and version, so the parser gets further.
        let mut v = b"GGUF\x03\x00\x00\x00".to_vec();
        v.extend_from_slice(&bytes);
        if let Ok(f) = GgufFile::from_bytes(v) {
            for t in f.tensors() {
                prop_assert!(t.n_bytes().is_none() || f.tensor_data(t).is_ok());
            }
        }
    }

    #[test]
    fn mutated_valid_files_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = std::fs::read(fixture("rust_written.gguf")).unwrap();
        for (i, b) in &edits {
            let i = i.index(bytes.len());
            bytes[i] = *b;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        if let Ok(f) = GgufFile::from_bytes(bytes) {
            // Everything checked at open: known-type tensors always have their bytes.
            for t in f.tensors() {
                prop_assert!(t.n_bytes().is_none() || f.tensor_data(t).is_ok());
            }
        }
    }
}
