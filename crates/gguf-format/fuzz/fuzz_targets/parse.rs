//! Fuzz target: `GgufFile::from_bytes` on arbitrary bytes must never panic, and a file that opens
//! must yield the bytes of every tensor of known type (all ranges are checked at open).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = gguf_format::GgufFile::from_bytes(data.to_vec()) {
        for t in file.tensors() {
            if t.n_bytes().is_some() {
                assert!(
                    file.tensor_data(t).is_ok(),
                    "checked tensor {} has no data",
                    t.name
                );
            }
        }
        for (key, value) in file.metadata().iter() {
            let _ = (key.len(), value.value_type());
        }
    }
});
