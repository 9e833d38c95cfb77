//! The artifact root `metal6 serve` serves: every image the selected nodes install has its
//! manifest, every output the manifest lists is there with its size and SHA-256, the boot
//! file each node's boot method fetches exists, and the installer fits the TFTP path.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

use metal6_inventory::Inventory;
use metal6_inventory::model::BootMethod;
use metal6_inventory::plan::{INSTALLER_HTTP_PATH, INSTALLER_TFTP_PATH, IPXE_HTTP_PATH};
use sha2::{Digest, Sha256};

use crate::Check;

/// A TFTP client without block-number rollover stops at block 65535: with RFC 1350's 512-byte
/// blocks (a client that negotiates no blksize) that is 33.5 MB, with the largest block our
/// server negotiates (1428 bytes, a 1500-byte MTU unfragmented) 93.6 MB. EDK2's Mtftp6 rolls
/// over; other NIC ROMs are not known to.
pub const TFTP_NO_ROLLOVER_MAX: u64 = 65_535 * 512;

fn sha256_file(p: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

pub fn checks(inv: &Inventory, root: &Path, nodes: &[String]) -> Vec<Check> {
    let mut out = vec![];
    if !root.is_dir() {
        out.push(Check::fail(
            "artifacts.root",
            format!("{} is not a directory", root.display()),
            "build the images first: metal6 image build images/NAME.yaml --out DIR",
        ));
        return out;
    }
    let selected: Vec<_> = inv.nodes.iter().filter(|n| nodes.contains(&n.name)).collect();
    let images: BTreeSet<&str> = selected.iter().map(|n| inv.profile_of(n).image.as_str()).collect();
    for image in images {
        out.push(manifest(root, image));
    }
    let mut methods: BTreeSet<&'static str> = BTreeSet::new();
    for n in &selected {
        let (path, method) = match inv.profile_of(n).boot {
            BootMethod::UefiHttp | BootMethod::DhcpLessHttp => (INSTALLER_HTTP_PATH, "UEFI HTTP"),
            BootMethod::Pxe => (INSTALLER_TFTP_PATH, "PXE (TFTP)"),
            BootMethod::Ipxe => (IPXE_HTTP_PATH, "iPXE"),
        };
        if !methods.insert(path) {
            continue;
        }
        let p = root.join(path);
        let Ok(meta) = std::fs::metadata(&p) else {
            out.push(Check::fail(
                "artifacts.boot-file",
                format!("{path} is missing: {method} nodes (e.g. {}) fetch it first", n.name),
                if path == IPXE_HTTP_PATH {
                    "add outputs.ipxe to the image recipe (Debian: apt install ipxe) and rebuild"
                } else {
                    "metal6 image build publishes it: rebuild the image into this artifact root"
                },
            ));
            continue;
        };
        let size = meta.len();
        if path == INSTALLER_TFTP_PATH && size > TFTP_NO_ROLLOVER_MAX {
            out.push(Check::warn(
                "artifacts.boot-file",
                format!("{path} is {size} bytes, more than 65535 TFTP blocks of 512: a PXE client without block-number rollover fetches it only if it negotiates blksize{}; EDK2 rolls over",
                    if size > 65_535 * 1428 { " (and not even at 1428)" } else { " 1428" }
                ),
                "boot these nodes over UEFI HTTP, or make the installer smaller",
            ));
        } else {
            out.push(Check::ok("artifacts.boot-file", format!("{path} ({size} bytes) for {method} nodes")));
        }
    }
    out
}

fn manifest(root: &Path, image: &str) -> Check {
    let id = "artifacts.image";
    let path = root.join("images").join(image).join("manifest.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            return Check::fail(
                id,
                format!("image {image}: no manifest at {} ({e})", path.display()),
                format!("metal6 image build images/{image}.yaml --out {}", root.display()),
            );
        }
    };
    let m: serde_json::Value = match serde_json::from_str(&text) {
        Ok(m) => m,
        Err(e) => return Check::fail(id, format!("image {image}: manifest unreadable: {e}"), "rebuild the image"),
    };
    let mut bad = vec![];
    let mut n = 0;
    for o in m["outputs"].as_array().into_iter().flatten() {
        let (Some(rel), Some(want)) = (o["path"].as_str(), o["sha256"].as_str()) else { continue };
        n += 1;
        let p = root.join(rel);
        match std::fs::metadata(&p) {
            Err(_) => bad.push(format!("{rel} missing")),
            Ok(meta) if o["bytes"].as_u64().is_some_and(|b| b != meta.len()) => {
                bad.push(format!("{rel} is {} bytes, the manifest says {}", meta.len(), o["bytes"]));
            }
            Ok(_) => match sha256_file(&p) {
                Ok(got) if got == want => {}
                Ok(got) => bad.push(format!(
                    "{rel} has sha256 {}…, the manifest says {}…",
                    &got[..12],
                    want.get(..12).unwrap_or(want)
                )),
                Err(e) => bad.push(format!("{rel}: {e}")),
            },
        }
    }
    if n == 0 {
        return Check::fail(id, format!("image {image}: the manifest lists no outputs"), "rebuild the image");
    }
    if bad.is_empty() {
        Check::ok(id, format!("image {image}: {n} outputs present, digests match the manifest"))
    } else {
        Check::fail(
            id,
            format!("image {image}: {}", bad.join("; ")),
            "rebuild the image into this root (another image's build may have replaced a shared boot file)",
        )
    }
}
