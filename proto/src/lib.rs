//! Protocol buffers of callguard's gRPC API and their generated tonic/prost code.
//!
//! * [`grpc::health::v1`] — the standard gRPC health checking protocol
//!   (`Check`, `Watch`, and `List` from gRPC proposal A90).
//! * [`callguard::v1`] — `callguard.v1.Breakers`: list, get and watch circuit
//!   breakers (each with its service's limiter, where the server runs one),
//!   and the admin RPCs `ForceOpen`, `ForceClose`, `Reset`.
//!
//! The `.proto` files are compiled in pure Rust at build time (`protox`), so no
//! `protoc` is needed. [`FILE_DESCRIPTOR_SET`] holds the encoded descriptors of
//! both files and of their imports, for server reflection.
//!
//! Clients are generated without tonic's transport: connect a
//! `tonic::transport::Channel` yourself and pass it to `XxxClient::new`.

/// The gRPC health checking protocol, package `grpc.health.v1`.
pub mod grpc {
    /// `grpc.health`.
    pub mod health {
        /// `grpc.health.v1`: `Health` with `Check`, `Watch` and `List`.
        #[allow(missing_docs, unreachable_pub, clippy::all, rustdoc::bare_urls)]
        pub mod v1 {
            tonic::include_proto!("grpc.health.v1");
        }
    }
}

/// callguard's own API, package `callguard.v1`.
pub mod callguard {
    /// `callguard.v1`: the `Breakers` service.
    #[allow(missing_docs, unreachable_pub, clippy::all)]
    pub mod v1 {
        tonic::include_proto!("callguard.v1");
    }
}

/// The encoded `google.protobuf.FileDescriptorSet` of `grpc/health/v1/health.proto`
/// and `callguard/v1/breakers.proto` with their imports, for
/// `tonic_reflection::server::Builder::register_encoded_file_descriptor_set`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/callguard_descriptor.bin"));

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use prost_types::FileDescriptorSet;

    use super::*;

    fn descriptor_set() -> FileDescriptorSet {
        FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptor set decodes")
    }

    #[test]
    fn descriptor_set_holds_both_files_and_their_imports() {
        let names: Vec<_> = descriptor_set()
            .file
            .into_iter()
            .filter_map(|f| f.name)
            .collect();
        for expected in [
            "grpc/health/v1/health.proto",
            "callguard/v1/breakers.proto",
            "google/protobuf/timestamp.proto",
            "google/protobuf/duration.proto",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} missing in {names:?}"
            );
        }
    }

    fn methods(service: &str) -> Vec<(String, bool)> {
        let (package, name) = service.rsplit_once('.').expect("qualified name");
        descriptor_set()
            .file
            .into_iter()
            .filter(|f| f.package() == package)
            .flat_map(|f| f.service)
            .filter(|s| s.name() == name)
            .flat_map(|s| s.method)
            .map(|m| (m.name().to_owned(), m.server_streaming()))
            .collect()
    }

    #[test]
    fn health_service_has_check_watch_and_list() {
        let methods = methods(grpc::health::v1::health_server::SERVICE_NAME);
        assert_eq!(
            methods,
            [
                ("Check".to_owned(), false),
                ("List".to_owned(), false),
                ("Watch".to_owned(), true),
            ]
        );
    }

    #[test]
    fn breakers_service_has_read_watch_and_admin_rpcs() {
        assert_eq!(
            methods(callguard::v1::breakers_server::SERVICE_NAME),
            [
                ("ListBreakers".to_owned(), false),
                ("GetBreaker".to_owned(), false),
                ("WatchBreakers".to_owned(), true),
                ("ForceOpen".to_owned(), false),
                ("ForceClose".to_owned(), false),
                ("Reset".to_owned(), false),
            ]
        );
    }

    #[test]
    fn breaker_states_keep_their_wire_names() {
        use callguard::v1::breaker::State;
        assert_eq!(State::Unspecified as i32, 0);
        assert_eq!(State::ForcedOpen.as_str_name(), "FORCED_OPEN");
        assert_eq!(State::from_str_name("HALF_OPEN"), Some(State::HalfOpen));
    }

    #[test]
    fn failure_rate_is_absent_unless_set() {
        use callguard::v1::Breaker;
        let without = Breaker::decode(
            Breaker {
                name: "llm".into(),
                ..Default::default()
            }
            .encode_to_vec()
            .as_slice(),
        )
        .unwrap();
        assert_eq!(without.failure_rate, None);
        let with = Breaker::decode(
            Breaker {
                failure_rate: Some(0.0),
                ..Default::default()
            }
            .encode_to_vec()
            .as_slice(),
        )
        .unwrap();
        assert_eq!(
            with.failure_rate,
            Some(0.0),
            "an explicit 0.0 survives the wire"
        );
    }

    #[test]
    fn a_breaker_without_a_limiter_reads_as_none_and_limits_survive_the_wire() {
        use callguard::v1::{Breaker, Limiter};
        let old = Breaker::decode(
            Breaker {
                name: "crm".into(),
                ..Default::default()
            }
            .encode_to_vec()
            .as_slice(),
        )
        .unwrap();
        assert_eq!(old.limiter, None, "what a server without limiters sends");
        let limiter = Limiter {
            mode: "off".into(),
            limit: None,
            provider_limit: Some(5),
            in_flight: 5,
            waiting: 27,
            paused_for: None,
        };
        let sent = Breaker {
            name: "elevenlabs".into(),
            limiter: Some(limiter.clone()),
            ..Default::default()
        };
        let read = Breaker::decode(sent.encode_to_vec().as_slice()).unwrap();
        assert_eq!(read.limiter, Some(limiter), "no limit stays apart from 0");
    }
}
