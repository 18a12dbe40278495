//! The module loader against arbitrary and mutated bytes: a typed
//! `invalid_module` error or a valid module, never a panic or a hang.

mod common;

use asyncer::{ErrorKind, Limits, TaskOptions};
use proptest::prelude::*;

const SMALL_GUEST: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "asyncer_alloc") (param i32) (result i32) i32.const 1024)
  (data (i32.const 16) "\00\07")
  (func (export "task:seven") (param i32 i32) (result i64)
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 2))))"#;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_bytes_are_an_invalid_module(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let rt = runtime();
        rt.block_on(async {
            let exec = common::executor(1);
            match exec.load_bytes(bytes).await {
                Err(err) => assert_eq!(err.kind(), ErrorKind::InvalidModule, "{err}"),
                Ok(module) => panic!("random bytes loaded as {module:?}"),
            }
        });
    }

    #[test]
    fn random_bytes_after_a_wasm_header_are_an_invalid_module(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut module = b"\0asm\x01\0\0\0".to_vec();
        module.extend_from_slice(&bytes);
        let rt = runtime();
        rt.block_on(async {
            let exec = common::executor(1);
            if let Err(err) = exec.load_bytes(module).await {
                assert_eq!(err.kind(), ErrorKind::InvalidModule, "{err}");
            }
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Flipping bytes of a valid guest: it is refused at load, or it runs to
    /// a typed outcome in its worker.
    #[test]
    fn mutated_guests_load_or_fail_with_a_type(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let mut bytes = wat::parse_str(SMALL_GUEST).unwrap();
        for (index, value) in flips {
            let at = index.index(bytes.len());
            bytes[at] = value;
        }
        let rt = runtime();
        rt.block_on(async {
            let exec = common::executor(1);
            match exec.load_bytes(bytes).await {
                Err(err) => assert_eq!(err.kind(), ErrorKind::InvalidModule, "{err}"),
                Ok(module) => {
                    let task = module.tasks()[0].clone();
                    let options = TaskOptions::new()
                        .limits(Limits::default().with_timeout(std::time::Duration::from_secs(2)));
                    let result = exec.submit_bytes_with(&module, &task, vec![], options).unwrap().await;
                    if let Err(err) = result {
                        assert_ne!(err.kind(), ErrorKind::WorkerCrashed, "{err}");
                    }
                }
            }
        });
    }
}
