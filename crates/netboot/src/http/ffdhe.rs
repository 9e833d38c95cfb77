//! TLS 1.2 DHE for firmware without elliptic curves.
//!
//! Debian 12's OVMF (EDK2 2022.11, its OpenSSL built without EC) offers only
//! `TLS_DHE_RSA_WITH_AES_{128,256}_GCM`/`CBC` and static-RSA suites, RSA signatures, and no
//! `supported_groups` extension (docs/quirks.md). rustls implements the DHE handshake on the
//! server side (it picks the provider's first FFDHE group when the client names none) but its
//! ring provider ships neither an FFDHE key exchange nor DHE cipher suites. This adds both:
//!
//! - the RFC 7919 `ffdhe2048` group, the exponentiation done by `crypto-bigint` in constant
//!   time over a 256-bit private exponent (RFC 7919 §5.2 asks for at least 225 bits for this
//!   group), the peer's value checked to lie in `[2, p-2]`;
//! - `TLS_DHE_RSA_WITH_AES_128_GCM_SHA256` and `…_AES_256_GCM_SHA384`: ring's AES-GCM record
//!   protection and PRF, exactly as in its `ECDHE_RSA` suites; only the key exchange differs.
//!
//! Static RSA key exchange (no forward secrecy) and CBC suites are not offered. The DHE suites
//! come after every ECDHE suite, so a client with curves never gets them.

use crypto_bigint::modular::runtime_mod::{DynResidue, DynResidueParams};
use crypto_bigint::{Encoding, U2048};
use rustls::crypto::{ActiveKeyExchange, CipherSuiteCommon, KeyExchangeAlgorithm, SharedSecret, SupportedKxGroup};
use rustls::ffdhe_groups::{FFDHE2048, FfdheGroup};
use rustls::{CipherSuite, Error, NamedGroup, PeerMisbehaved, SupportedCipherSuite, Tls12CipherSuite};

/// Bits of the private exponent.
const EXPONENT_BITS: usize = 256;

/// The `ffdhe2048` group (RFC 7919 Appendix A.1).
#[derive(Debug)]
pub struct Ffdhe2048;

pub static FFDHE2048_GROUP: Ffdhe2048 = Ffdhe2048;

fn params() -> DynResidueParams<{ U2048::LIMBS }> {
    DynResidueParams::new(&U2048::from_be_slice(FFDHE2048.p))
}

impl SupportedKxGroup for Ffdhe2048 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        let mut secret = [0u8; 256];
        rustls::crypto::ring::default_provider()
            .secure_random
            .fill(&mut secret[256 - EXPONENT_BITS / 8..])
            .map_err(|_| Error::FailedToGetRandomBytes)?;
        let x = U2048::from_be_slice(&secret);
        let g = DynResidue::new(&U2048::from_u8(2), params());
        let public = g.pow_bounded_exp(&x, EXPONENT_BITS).retrieve().to_be_bytes().to_vec();
        Ok(Box::new(Active { x, public }))
    }

    fn ffdhe_group(&self) -> Option<FfdheGroup<'static>> {
        Some(FFDHE2048)
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::FFDHE2048
    }
}

struct Active {
    x: U2048,
    public: Vec<u8>,
}

impl ActiveKeyExchange for Active {
    fn complete(self: Box<Self>, peer_pub_key: &[u8]) -> Result<SharedSecret, Error> {
        let peer = peer_value(peer_pub_key)?;
        let shared = DynResidue::new(&peer, params()).pow_bounded_exp(&self.x, EXPONENT_BITS).retrieve();
        // Left-padded to the modulus' length (rustls strips the zeros for TLS 1.2 itself).
        Ok(SharedSecret::from(&shared.to_be_bytes()[..]))
    }

    fn pub_key(&self) -> &[u8] {
        &self.public
    }

    fn ffdhe_group(&self) -> Option<FfdheGroup<'static>> {
        Some(FFDHE2048)
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::FFDHE2048
    }
}

/// The peer's public value as a number in `[2, p-2]` (1 and p-1 would fix the shared secret).
fn peer_value(bytes: &[u8]) -> Result<U2048, Error> {
    let bytes = match bytes.iter().position(|b| *b != 0) {
        Some(i) => &bytes[i..],
        None => return Err(PeerMisbehaved::InvalidKeyShare.into()),
    };
    if bytes.len() > 256 {
        return Err(PeerMisbehaved::InvalidKeyShare.into());
    }
    let mut padded = [0u8; 256];
    padded[256 - bytes.len()..].copy_from_slice(bytes);
    let y = U2048::from_be_slice(&padded);
    let p = U2048::from_be_slice(FFDHE2048.p);
    let p_minus_1 = p.wrapping_sub(&U2048::ONE);
    if y <= U2048::ONE || y >= p_minus_1 {
        return Err(PeerMisbehaved::InvalidKeyShare.into());
    }
    Ok(y)
}

/// ring's `ECDHE_RSA` AES-GCM suite, renamed and with DHE key exchange.
fn dhe_from(ecdhe: SupportedCipherSuite, suite: CipherSuite) -> Option<SupportedCipherSuite> {
    let SupportedCipherSuite::Tls12(base) = ecdhe else { return None };
    let dhe: &'static Tls12CipherSuite = Box::leak(Box::new(Tls12CipherSuite {
        common: CipherSuiteCommon { suite, ..base.common },
        kx: KeyExchangeAlgorithm::DHE,
        ..*base
    }));
    Some(SupportedCipherSuite::Tls12(dhe))
}

/// The ring provider with DHE_RSA AES-GCM suites after its own and `ffdhe2048` after its
/// curves. Built once per server start (the two leaked suites are a few hundred bytes).
pub fn provider() -> rustls::crypto::CryptoProvider {
    use rustls::crypto::ring::cipher_suite as ring_suites;
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites.extend(
        [
            (ring_suites::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, CipherSuite::TLS_DHE_RSA_WITH_AES_128_GCM_SHA256),
            (ring_suites::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, CipherSuite::TLS_DHE_RSA_WITH_AES_256_GCM_SHA384),
        ]
        .into_iter()
        .filter_map(|(ecdhe, suite)| dhe_from(ecdhe, suite)),
    );
    p.kx_groups.push(&FFDHE2048_GROUP);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_agree_and_bad_peer_values_are_refused() {
        let a = FFDHE2048_GROUP.start().expect("a");
        let b = FFDHE2048_GROUP.start().expect("b");
        let (a_pub, b_pub) = (a.pub_key().to_vec(), b.pub_key().to_vec());
        assert_eq!(a_pub.len(), 256);
        assert_ne!(a_pub, b_pub);
        let ab = a.complete(&b_pub).expect("a completes");
        let ba = b.complete(&a_pub).expect("b completes");
        assert_eq!(ab.secret_bytes(), ba.secret_bytes());
        assert_eq!(ab.secret_bytes().len(), 256, "left-padded to the modulus");
        // 0, 1, p-1, p and longer than p are refused.
        let p = FFDHE2048.p.to_vec();
        let mut p_minus_1 = p.clone();
        p_minus_1[255] -= 1;
        for bad in [vec![0u8; 256], vec![1u8], p_minus_1, p, vec![0xff; 257]] {
            let c = FFDHE2048_GROUP.start().expect("c");
            assert!(c.complete(&bad).is_err(), "{:02x?}", &bad[bad.len().saturating_sub(4)..]);
        }
    }

    #[test]
    fn the_provider_offers_dhe_only_after_every_ecdhe_suite() {
        let p = provider();
        let names: Vec<CipherSuite> = p.cipher_suites.iter().map(|s| s.suite()).collect();
        let dhe = names.iter().position(|s| *s == CipherSuite::TLS_DHE_RSA_WITH_AES_128_GCM_SHA256).expect("dhe");
        let last_ecdhe = names.iter().rposition(|s| format!("{s:?}").contains("ECDHE")).expect("ecdhe");
        assert!(dhe > last_ecdhe, "{names:?}");
        assert_eq!(p.kx_groups.last().map(|g| g.name()), Some(NamedGroup::FFDHE2048));
    }
}
