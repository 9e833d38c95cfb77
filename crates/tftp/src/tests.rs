use super::*;

const LIMITS: Limits = Limits { max_blksize: 1428, max_windowsize: 64 };

fn rrq(parts: &[&str]) -> Vec<u8> {
    let mut p = RRQ.to_be_bytes().to_vec();
    for s in parts {
        p.extend_from_slice(s.as_bytes());
        p.push(0);
    }
    p
}

#[test]
fn requests_parse_with_options_case_insensitively() {
    let r = parse_request(&rrq(&["boot/ipxe.efi", "OCTET", "BlkSize", "1468", "tsize", "0", "windowsize", "16"]))
        .expect("request");
    assert_eq!(r.filename, "boot/ipxe.efi");
    assert_eq!(r.mode, Mode::Octet);
    assert!(!r.write);
    assert_eq!(r.options, RequestOptions { blksize: Some(1468), tsize: true, timeout: None, windowsize: Some(16) });
}

#[test]
fn unusable_option_values_are_ignored_and_the_first_counts() {
    let cases: &[(&[&str], RequestOptions)] = &[
        (&["blksize", "7"], RequestOptions::default()),
        (&["blksize", "65465"], RequestOptions::default()),
        (&["blksize", "+512"], RequestOptions::default()),
        (&["blksize", "99999999999999999999999"], RequestOptions::default()),
        (&["timeout", "0"], RequestOptions::default()),
        (&["timeout", "256"], RequestOptions::default()),
        (&["windowsize", "0"], RequestOptions::default()),
        (&["tsize", "x"], RequestOptions::default()),
        (&["blksize", "1024", "blksize", "512"], RequestOptions { blksize: Some(1024), ..RequestOptions::default() }),
        (&["multicast", "", "timeout", "5"], RequestOptions { timeout: Some(5), ..RequestOptions::default() }),
    ];
    for (opts, want) in cases {
        let mut parts = vec!["f", "octet"];
        parts.extend_from_slice(opts);
        assert_eq!(parse_request(&rrq(&parts)).expect("request").options, *want, "{opts:?}");
    }
}

#[test]
fn malformed_requests_are_named() {
    assert_eq!(parse_request(&[0]), Err(RequestError::Short));
    assert_eq!(parse_request(&[0, 4, 0, 1]), Err(RequestError::NotARequest(4)));
    assert_eq!(parse_request(b"\x00\x01file"), Err(RequestError::Unterminated("filename")));
    assert_eq!(parse_request(b"\x00\x01file\x00octet"), Err(RequestError::Unterminated("mode")));
    assert_eq!(parse_request(b"\x00\x01\x00octet\x00"), Err(RequestError::EmptyFilename));
    assert_eq!(parse_request(b"\x00\x01\xff\x00octet\x00"), Err(RequestError::FilenameNotUtf8));
    assert_eq!(parse_request(b"\x00\x01f\x00binary\x00"), Err(RequestError::UnknownMode));
    assert_eq!(parse_request(b"\x00\x01f\x00octet\x00blksize\x00"), Err(RequestError::Unterminated("option value")));
    // Trailing NUL padding after the last option is accepted.
    let mut padded = rrq(&["f", "octet", "tsize", "0"]);
    padded.extend_from_slice(&[0, 0, 0]);
    assert!(parse_request(&padded).expect("padded").options.tsize);
    let w = parse_request(b"\x00\x02up\x00netascii\x00").expect("wrq");
    assert!(w.write && w.mode == Mode::Netascii);
}

#[test]
fn replies_parse() {
    assert_eq!(parse_reply(&ack_packet(513)), Reply::Ack(513));
    assert_eq!(
        parse_reply(&error_packet(ErrorCode::OptionRefused, "no")),
        Reply::Error { code: 8, message: "no".into() }
    );
    assert_eq!(parse_reply(b"\x00\x05\x00\x00unterminated"), Reply::Error { code: 0, message: "unterminated".into() });
    assert_eq!(parse_reply(&[0, 4, 1]), Reply::Other);
    assert_eq!(parse_reply(&[0, 3, 0, 1, 9]), Reply::Other);
}

#[test]
fn negotiation_clamps_and_declines_timeout() {
    let opts = RequestOptions { blksize: Some(9000), tsize: true, timeout: Some(10), windowsize: Some(500) };
    let n = negotiate(&opts, LIMITS, 3_000_017);
    assert_eq!((n.blksize, n.windowsize), (1428, 64));
    let oack = n.oack.expect("oack");
    assert_eq!(&oack[..2], &OACK.to_be_bytes());
    assert_eq!(&oack[2..], b"blksize\x001428\x00tsize\x003000017\x00windowsize\x0064\x00".as_slice());
    let plain = negotiate(&RequestOptions::default(), LIMITS, 10);
    assert_eq!(plain, Negotiated { blksize: 512, windowsize: 1, oack: None });
    // Only a timeout: nothing acknowledged, so no OACK (RFC 2347: plain transfer).
    let t = negotiate(&RequestOptions { timeout: Some(3), ..RequestOptions::default() }, LIMITS, 10);
    assert_eq!(t.oack, None);
}

/// Drives a sender with a client that acknowledges what it receives in order, dropping the
/// blocks `lose` names the first time they are sent; returns blocks sent and whether it ended.
fn run(file_len: u64, n: &Negotiated, lose: &[u64]) -> (Vec<u64>, Step) {
    let mut s = Sender::new(n, file_len, 5);
    let mut lost: Vec<u64> = lose.to_vec();
    let mut sent = Vec::new();
    let mut have = if n.oack.is_some() { None } else { Some(0u64) };
    let mut step = s.start();
    for _ in 0..1_000_000 {
        let Step::Send(range) = step.clone() else { return (sent, step) };
        for b in range.clone() {
            sent.push(b);
            if let Some(i) = lost.iter().position(|x| *x == b) {
                lost.remove(i);
                continue;
            }
            match have {
                None if b == 0 => have = Some(0),
                Some(h) if b == h + 1 => have = Some(b),
                _ => {}
            }
        }
        // The client acknowledges the last block it holds in order (RFC 7440), or times out.
        step = match have {
            Some(h) if h >= range.start || (range.start > 0 && h == range.start - 1 && n.windowsize > 1) => {
                s.on_ack(Sender::wire_number(h))
            }
            _ => s.on_timeout(),
        };
    }
    panic!("no end")
}

#[test]
fn lock_step_sends_every_block_once_and_ends_on_the_short_block() {
    let n = negotiate(&RequestOptions::default(), LIMITS, 1024);
    // 1024 = 2 × 512: a third, empty block ends the transfer.
    let (sent, end) = run(1024, &n, &[]);
    assert_eq!((sent, end), (vec![1, 2, 3], Step::Done));
    let (sent, end) = run(1000, &n, &[]);
    assert_eq!((sent, end), (vec![1, 2], Step::Done));
    let (sent, end) = run(0, &n, &[]);
    assert_eq!((sent, end), (vec![1], Step::Done));
}

#[test]
fn a_lost_block_is_resent_after_the_timeout() {
    let n = negotiate(&RequestOptions::default(), LIMITS, 2000);
    let (sent, end) = run(2000, &n, &[2]);
    assert_eq!((sent, end), (vec![1, 2, 2, 3, 4], Step::Done));
}

#[test]
fn duplicate_acks_in_lock_step_are_not_answered() {
    let n = negotiate(&RequestOptions::default(), LIMITS, 5000);
    let mut s = Sender::new(&n, 5000, 5);
    assert_eq!(s.start(), Step::Send(1..2));
    assert_eq!(s.on_ack(1), Step::Send(2..3));
    // A delayed duplicate of ACK 1: the Sorcerer's Apprentice would resend block 2.
    assert_eq!(s.on_ack(1), Step::Wait);
    assert_eq!(s.on_ack(7), Step::Wait, "an ACK for a block never sent");
    assert_eq!(s.on_ack(2), Step::Send(3..4));
}

#[test]
fn windows_resume_after_the_last_block_acknowledged() {
    let opts = RequestOptions { blksize: Some(100), windowsize: Some(4), ..RequestOptions::default() };
    let n = negotiate(&opts, LIMITS, 1000);
    let mut s = Sender::new(&n, 1000, 5);
    assert_eq!(s.blocks(), 11);
    assert_eq!(s.start(), Step::Send(0..1), "the OACK alone first");
    assert_eq!(s.on_ack(1), Step::Wait, "data not started yet");
    assert_eq!(s.on_ack(0), Step::Send(1..5));
    assert_eq!(s.on_ack(2), Step::Send(3..7), "block 3 lost: resend from it");
    assert_eq!(s.on_ack(2), Step::Send(3..7), "the block before the window: its first was lost");
    assert_eq!(s.on_ack(6), Step::Send(7..11));
    assert_eq!(s.on_ack(10), Step::Send(11..12));
    assert_eq!(s.on_ack(11), Step::Done);
    assert_eq!(s.block_range(11), 1000..1100);
    // With losses the whole file still arrives in order.
    let (sent, end) = run(1000, &n, &[3, 9, 11]);
    assert_eq!(end, Step::Done);
    assert!(sent.len() < 24, "{sent:?}");
}

#[test]
fn block_numbers_roll_over_past_65535() {
    let n = negotiate(&RequestOptions { windowsize: Some(64), ..RequestOptions::default() }, LIMITS, 70_000 * 512);
    let (sent, end) = run(70_000 * 512, &n, &[65_535, 65_536, 65_537]);
    assert_eq!(end, Step::Done);
    assert_eq!(sent.iter().max(), Some(&70_001));
    let mut s = Sender::new(&negotiate(&RequestOptions::default(), LIMITS, 70_000 * 512), 70_000 * 512, 5);
    s.start();
    for b in 1..=65_536u64 {
        assert_eq!(s.on_ack(Sender::wire_number(b)), Step::Send(b + 1..b + 2));
    }
    assert_eq!(Sender::wire_number(65_536), 0);
    // A stale ACK 1 from 65,536 blocks ago is not block 65,537.
    assert_eq!(s.on_ack(0), Step::Wait);
    assert_eq!(s.on_ack(1), Step::Send(65_538..65_539));
}

#[test]
fn gives_up_after_the_last_retry() {
    let n = negotiate(&RequestOptions::default(), LIMITS, 100);
    let mut s = Sender::new(&n, 100, 2);
    assert_eq!(s.start(), Step::Send(1..2));
    assert_eq!(s.on_timeout(), Step::Send(1..2));
    assert_eq!(s.on_timeout(), Step::Send(1..2));
    assert_eq!(s.on_timeout(), Step::GiveUp);
}
