//! The facade: what metal6 asks of a BMC, in its own types. The CLI sees no Redfish paths or
//! JSON; swapping the HTTP/Redfish layer underneath changes this file only.
//!
//! Paths are discovered from the service (first System, first Manager, the BIOS settings object,
//! the Dell OEM links) instead of hard-coding `System.Embedded.1`, so sushy-tools (UUID ids,
//! `BIOS`) and iDRAC take the same code.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde::Serialize;
use serde_json::{Value, json};
use tracing::{debug, info};

use crate::client::{Client, ConnectOptions, RedfishError};

/// One BMC, connected and logged in.
#[derive(Debug)]
pub struct Bmc {
    client: Client,
    pub vendor: Option<String>,
    system: String,
    manager: Option<String>,
    /// Dell OEM job collection (`…/Oem/Dell/Jobs`), when the manager has one.
    dell_jobs: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    pub vendor: Option<String>,
    pub model: Option<String>,
    /// Dell puts the service tag in `SKU`.
    pub service_tag: Option<String>,
    pub serial: Option<String>,
    pub bios_version: Option<String>,
    pub bmc_firmware: Option<String>,
    pub power: Option<String>,
    pub nics: Vec<BmcNic>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BmcNic {
    /// The BMC's id: a Dell FQDD (`NIC.Integrated.1-1-1`, what `HttpDev1Interface` takes).
    pub id: String,
    pub mac: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootTarget {
    UefiHttp,
    Pxe,
    Disk,
}

impl BootTarget {
    fn redfish(self) -> &'static str {
        match self {
            BootTarget::UefiHttp => "UefiHttp",
            BootTarget::Pxe => "Pxe",
            BootTarget::Disk => "Hdd",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PowerAction {
    On,
    Off,
    Cycle,
}

/// What staging BIOS values produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "result", content = "job")]
pub enum Staged {
    /// A job that applies them at the next reset.
    Job(String),
    /// Accepted and pending, but the BMC made no job (and none could be made): applying
    /// them is up to the next reset, unverified until then.
    PendingWithoutJob,
    /// Nothing to apply (the BMC said there is no pending data).
    Nothing,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    pub id: String,
    /// Dell JobState or DMTF TaskState/JobState.
    pub state: String,
    pub message: Option<String>,
    pub message_id: Option<String>,
    pub percent: Option<u64>,
    /// Dell JobType (`BIOSConfiguration`, `FirmwareUpdate`, `RAIDConfiguration`, ...).
    pub job_type: Option<String>,
}

impl JobStatus {
    /// The job will not move again.
    pub fn is_final(&self) -> bool {
        self.failed() || self.succeeded()
    }

    pub fn succeeded(&self) -> bool {
        matches!(self.state.as_str(), "Completed" | "RebootCompleted")
    }

    /// Failed, or stuck: Dell's "Job processing initialization failure." (PR30) stays
    /// Scheduled for ever (NVIDIA libredfish calls it ScheduledWithErrors).
    pub fn failed(&self) -> bool {
        matches!(
            self.state.as_str(),
            "Failed" | "CompletedWithErrors" | "RebootFailed" | "Exception" | "Killed" | "Cancelled"
        ) || self.message_id.as_deref().is_some_and(|m| m.ends_with("PR30"))
            || self.message.as_deref().is_some_and(|m| m.contains("initialization failure"))
    }
}

/// A firmware component as the BMC reports it.
#[derive(Debug, Clone, Serialize)]
pub struct Firmware {
    pub id: String,
    pub name: String,
    pub version: String,
    pub updateable: bool,
}

impl Bmc {
    pub async fn connect(opts: ConnectOptions) -> Result<Bmc, RedfishError> {
        let want = opts.system.clone();
        let (client, root) = Client::connect(opts).await?;
        let vendor = root.get("Vendor").and_then(Value::as_str).map(str::to_owned);
        // The session exists from here: a failure below must end it, or every failed attempt
        // leaves one behind until the BMC's session limit refuses everyone (notes §1).
        let system = match pick_system(&client, &root, want.as_deref()).await {
            Ok(s) => s,
            Err(e) => {
                client.logout().await;
                return Err(e);
            }
        };
        let manager = first_member(&client, &root, "Managers").await.ok().flatten();
        let mut bmc = Bmc { client, vendor, system, manager, dell_jobs: None };
        if let Some(m) = &bmc.manager
            && let Ok(doc) = bmc.client.get(m).await
        {
            bmc.dell_jobs = doc
                .pointer("/Links/Oem/Dell/Jobs/@odata.id")
                .or_else(|| doc.pointer("/Oem/Dell/Jobs/@odata.id"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| (bmc.vendor.as_deref() == Some("Dell")).then(|| format!("{m}/Oem/Dell/Jobs")));
        }
        debug!(system = %bmc.system, manager = ?bmc.manager, dell_jobs = ?bmc.dell_jobs, "connected");
        Ok(bmc)
    }

    pub async fn logout(self) {
        self.client.logout().await;
    }

    pub async fn inventory(&self) -> Result<Inventory, RedfishError> {
        let sys = self.client.get(&self.system).await?;
        let s = |k: &str| sys.get(k).and_then(Value::as_str).map(str::to_owned);
        let mut nics = Vec::new();
        if let Some(coll) = link(&sys, "EthernetInterfaces") {
            for member in members(&self.client.get(&coll).await?) {
                let nic = self.client.get(&member).await?;
                let id = nic.get("Id").and_then(Value::as_str).unwrap_or(&member).to_owned();
                let mac = nic
                    .get("PermanentMACAddress")
                    .or_else(|| nic.get("MACAddress"))
                    .and_then(Value::as_str)
                    .filter(|m| !m.is_empty())
                    .map(str::to_ascii_lowercase);
                nics.push(BmcNic { id, mac });
            }
        }
        let bmc_firmware = match &self.manager {
            Some(m) => self.client.get(m).await?.get("FirmwareVersion").and_then(Value::as_str).map(str::to_owned),
            None => None,
        };
        Ok(Inventory {
            vendor: self.vendor.clone(),
            model: s("Model"),
            service_tag: s("SKU"),
            serial: s("SerialNumber"),
            bios_version: s("BiosVersion"),
            bmc_firmware,
            power: s("PowerState"),
            nics,
        })
    }

    pub async fn power_state(&self) -> Result<String, RedfishError> {
        let sys = self.client.get(&self.system).await?;
        Ok(sys.get("PowerState").and_then(Value::as_str).unwrap_or("Unknown").to_owned())
    }

    /// Power on/off/cycle, then wait until `PowerState` shows it (BMCs report transitions late).
    pub async fn power(&self, action: PowerAction, wait: Duration) -> Result<String, RedfishError> {
        let sys = self.client.get(&self.system).await?;
        let state = sys.get("PowerState").and_then(Value::as_str).unwrap_or("Unknown").to_owned();
        let allowed: Vec<&str> = sys
            .pointer("/Actions/#ComputerSystem.Reset/ResetType@Redfish.AllowableValues")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let (reset, target) = match (action, state.as_str()) {
            (PowerAction::On, "On") | (PowerAction::Off, "Off") => return Ok(state),
            (PowerAction::On, _) => ("On", "On"),
            (PowerAction::Off, _) => ("ForceOff", "Off"),
            (PowerAction::Cycle, "Off") => ("On", "On"),
            // PowerCycle where offered (iDRAC); sushy answers 501 to it and does not list it.
            (PowerAction::Cycle, _) if allowed.contains(&"PowerCycle") => ("PowerCycle", "On"),
            (PowerAction::Cycle, _) => ("ForceRestart", "On"),
        };
        self.reset(reset).await?;
        let deadline = Instant::now() + wait;
        loop {
            let now = self.power_state().await?;
            if now == target || Instant::now() >= deadline {
                return Ok(now);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The boot override as the BMC reports it: `(BootSourceOverrideEnabled, Target)`.
    pub async fn boot_override(&self) -> Result<(String, String), RedfishError> {
        let sys = self.client.get(&self.system).await?;
        let s = |p: &str| sys.pointer(p).and_then(Value::as_str).unwrap_or("").to_owned();
        Ok((s("/Boot/BootSourceOverrideEnabled"), s("/Boot/BootSourceOverrideTarget")))
    }

    /// `ComputerSystem.Reset` with this `ResetType`.
    pub async fn reset(&self, reset_type: &str) -> Result<(), RedfishError> {
        let sys = self.client.get(&self.system).await?;
        let target = sys
            .pointer("/Actions/#ComputerSystem.Reset/target")
            .and_then(Value::as_str)
            .map_or_else(|| format!("{}/Actions/ComputerSystem.Reset", self.system), str::to_owned);
        info!(reset_type, "reset");
        // An action POST carries no If-Match: newer iDRACs answer 412 to it (metal-operator#1015).
        self.client.request(Method::POST, &target, Some(&json!({"ResetType": reset_type}))).await?;
        Ok(())
    }

    /// One-time boot in UEFI mode, verified by reading it back (iDRAC9 is known to drop it,
    /// metal-operator#80; sushy rewrites UefiHttp without a URI to Pxe).
    pub async fn boot_once(&self, target: BootTarget) -> Result<(), RedfishError> {
        let body = json!({"Boot": {
            "BootSourceOverrideTarget": target.redfish(),
            "BootSourceOverrideEnabled": "Once",
            "BootSourceOverrideMode": "UEFI",
        }});
        self.client.request(Method::PATCH, &self.system, Some(&body)).await?;
        let sys = self.client.get(&self.system).await?;
        let got = sys.pointer("/Boot/BootSourceOverrideTarget").and_then(Value::as_str).unwrap_or("");
        if got != target.redfish() {
            return Err(RedfishError::Unexpected {
                path: self.system.clone(),
                what: format!(
                    "boot override reads back as {got:?}, not {:?}: the BMC did not keep it",
                    target.redfish()
                ),
            });
        }
        let enabled = sys.pointer("/Boot/BootSourceOverrideEnabled").and_then(Value::as_str).unwrap_or("");
        if enabled != "Once" {
            return Err(RedfishError::Unexpected {
                path: self.system.clone(),
                what: format!("boot override is {enabled:?}, not \"Once\": every later boot would netboot too"),
            });
        }
        Ok(())
    }

    async fn bios_path(&self) -> Result<String, RedfishError> {
        let sys = self.client.get(&self.system).await?;
        link(&sys, "Bios").ok_or_else(|| RedfishError::Unexpected {
            path: self.system.clone(),
            what: "the system has no Bios resource".into(),
        })
    }

    /// The system's HTTPS boot trust store (DMTF `ComputerSystem.Boot.Certificates`; on Dell
    /// "BIOS HTTP Boot Certificate" instances): its path and each member's path and PEM.
    /// `None` when the BMC offers none.
    pub async fn boot_certificates(&self) -> Result<Option<(String, Vec<(String, String)>)>, RedfishError> {
        let sys = self.client.get(&self.system).await?;
        let Some(coll) = sys.pointer("/Boot/Certificates/@odata.id").and_then(Value::as_str).map(str::to_owned) else {
            return Ok(None);
        };
        let mut out = vec![];
        for m in members(&self.client.get(&coll).await?) {
            let doc = self.client.get(&m).await?;
            out.push((m, doc.get("CertificateString").and_then(Value::as_str).unwrap_or_default().to_owned()));
        }
        Ok(Some((coll, out)))
    }

    /// Adds a PEM certificate to a certificate collection (DMTF `CertificateCollection` POST);
    /// the new member's path when the BMC says it.
    pub async fn add_certificate(&self, collection: &str, pem: &str) -> Result<Option<String>, RedfishError> {
        let body = json!({"CertificateString": pem, "CertificateType": "PEM"});
        Ok(self.client.request(Method::POST, collection, Some(&body)).await?.location)
    }

    /// Whether `pem` is in the HTTPS boot trust store; with `add`, puts it there when missing
    /// and reads the store back. `None` when the BMC has no store.
    pub async fn boot_ca(&self, pem: &str, add: bool) -> Result<Option<BootCa>, RedfishError> {
        let Some((collection, certs)) = self.boot_certificates().await? else { return Ok(None) };
        let present = |certs: &[(String, String)]| certs.iter().any(|(_, c)| same_certificate(c, pem));
        let mut ca = BootCa { present: present(&certs), count: certs.len(), added: None, collection };
        if add && !ca.present {
            ca.added = Some(self.add_certificate(&ca.collection, pem).await?.unwrap_or_default());
            let after = self.boot_certificates().await?.map(|(_, c)| c).unwrap_or_default();
            ca.present = present(&after);
            ca.count = after.len();
        }
        Ok(Some(ca))
    }

    /// Current BIOS attributes and the settings object's path.
    pub async fn bios(&self) -> Result<(BTreeMap<String, Value>, String), RedfishError> {
        let path = self.bios_path().await?;
        let doc = self.client.get(&path).await?;
        let attrs = attributes(&doc);
        let settings = doc
            .pointer("/@Redfish.Settings/SettingsObject/@odata.id")
            .and_then(Value::as_str)
            .map_or_else(|| format!("{path}/Settings"), str::to_owned);
        Ok((attrs, settings))
    }

    pub async fn bios_pending(&self, settings: &str) -> Result<BTreeMap<String, Value>, RedfishError> {
        Ok(attributes(&self.client.get(settings).await?))
    }

    /// The BIOS attribute registry: Dell serves it at `Bios/BiosRegistry`; otherwise it is found
    /// through `/Registries` by the name in `AttributeRegistry`.
    pub async fn bios_registry(&self) -> Result<Value, RedfishError> {
        let path = self.bios_path().await?;
        if let Ok(doc) = self.client.get(&format!("{path}/BiosRegistry")).await {
            return Ok(doc);
        }
        let bios = self.client.get(&path).await?;
        let name = bios.get("AttributeRegistry").and_then(Value::as_str).unwrap_or_default();
        let entry = self.client.get(&format!("{}/Registries/{name}", self.client.root_path())).await?;
        let uri = entry
            .pointer("/Location/0/Uri")
            .and_then(Value::as_str)
            .ok_or_else(|| RedfishError::Unexpected { path: name.into(), what: "registry has no Location".into() })?;
        self.client.get(uri).await
    }

    /// PATCHes the settings object to apply at the next reset, and finds the job that will.
    /// Handles both Dell styles (notes §3): one-shot (202 + JID) and two-step (200, then a
    /// config job), "no pending data" and 200 without a Location.
    pub async fn stage_bios(&self, settings: &str, attrs: &BTreeMap<String, Value>) -> Result<Staged, RedfishError> {
        let body = json!({"@Redfish.SettingsApplyTime": {"ApplyTime": "OnReset"}, "Attributes": attrs});
        let reply = self.client.request(Method::PATCH, settings, Some(&body)).await?;
        if let Some(job) = reply.location.as_deref().and_then(job_id) {
            return Ok(Staged::Job(job));
        }
        let Some(jobs) = &self.dell_jobs else { return Ok(Staged::PendingWithoutJob) };
        match self.client.request(Method::POST, jobs, Some(&json!({"TargetSettingsURI": settings}))).await {
            Ok(r) => Ok(r.location.as_deref().and_then(job_id).map_or(Staged::PendingWithoutJob, Staged::Job)),
            Err(e) if e.message().is_some_and(|m| m.contains("No pending data")) => Ok(Staged::Nothing),
            // The one-shot PATCH made a job after all and did not say so (200 without
            // Location, libredfish#97): find it.
            Err(e)
                if e.message_id() == Some("SYS011") || e.message().is_some_and(|m| m.contains("already committed")) =>
            {
                Ok(self
                    .open_jobs()
                    .await?
                    .into_iter()
                    .find(|j| j.state != "Running")
                    .map_or(Staged::PendingWithoutJob, |j| Staged::Job(j.id)))
            }
            Err(e) => Err(e),
        }
    }

    /// Jobs in the Dell queue that have not finished.
    pub async fn open_jobs(&self) -> Result<Vec<JobStatus>, RedfishError> {
        let Some(jobs) = &self.dell_jobs else { return Ok(vec![]) };
        let mut out = Vec::new();
        for m in members(&self.client.get(jobs).await?) {
            if let Ok(doc) = self.client.get(&m).await {
                let j = job_status(&doc, &m);
                if !j.is_final() {
                    out.push(j);
                }
            }
        }
        Ok(out)
    }

    /// Clears what a previous attempt left: open BIOS configuration jobs (one would block
    /// the new one) and pending BIOS values. Jobs of other kinds — a firmware update, a RAID
    /// job someone else queued — are not ours to delete and stay (JID_CLEARALL deleted them
    /// all). Refuses while a job runs (deleting it mid-flight can leave the BIOS
    /// half-configured).
    pub async fn clear_stale(&self, settings: &str) -> Result<(), RedfishError> {
        let open = self.open_jobs().await?;
        if let Some(run) = open.iter().find(|j| j.state == "Running") {
            return Err(RedfishError::Unexpected {
                path: run.id.clone(),
                what: format!("job {} is running; not clearing the queue", run.id),
            });
        }
        if let Some(m) = &self.manager {
            let action = format!("{m}/Oem/Dell/DellJobService/Actions/DellJobService.DeleteJobQueue");
            for j in open.iter().filter(|j| j.job_type.as_deref() == Some("BIOSConfiguration")) {
                self.client.request(Method::POST, &action, Some(&json!({"JobID": j.id}))).await?;
                info!(job = %j.id, "deleted a stale BIOS configuration job");
            }
            let others = open.iter().filter(|j| j.job_type.as_deref() != Some("BIOSConfiguration")).count();
            if others > 0 {
                info!(jobs = others, "left the queue's other jobs alone");
            }
        }
        if !self.bios_pending(settings).await?.is_empty() {
            let doc = self.client.get(settings).await?;
            if let Some(target) = doc
                .pointer("/Actions/Oem")
                .and_then(Value::as_object)
                .and_then(|o| o.iter().find(|(k, _)| k.ends_with("ClearPending")))
                .and_then(|(_, v)| v.get("target"))
                .and_then(Value::as_str)
            {
                self.client.request(Method::POST, target, Some(&json!({}))).await?;
                info!("cleared stale pending BIOS values");
            }
        }
        Ok(())
    }

    /// A job by id, from the Dell view, the DMTF JobService or the TaskService — whichever
    /// still has it (iDRAC 7.00 drops finished tasks within seconds).
    pub async fn job(&self, id: &str) -> Result<JobStatus, RedfishError> {
        let root = self.client.root_path().to_owned();
        let mut views: Vec<String> = self.dell_jobs.iter().map(|j| format!("{j}/{id}")).collect();
        views.push(format!("{root}/JobService/Jobs/{id}"));
        views.push(format!("{root}/TaskService/Tasks/{id}"));
        let mut last = None;
        for v in &views {
            match self.client.get(v).await {
                Ok(doc) => return Ok(job_status(&doc, id)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| RedfishError::Unexpected { path: id.into(), what: "no job view".into() }))
    }

    /// Polls a job until `stop` holds (final, or e.g. waiting for a reset), calling `progress`
    /// on every change of state.
    pub async fn wait_job(
        &self,
        id: &str,
        timeout: Duration,
        stop: impl Fn(&JobStatus) -> bool,
        mut progress: impl FnMut(&JobStatus),
    ) -> Result<JobStatus, RedfishError> {
        let deadline = Instant::now() + timeout;
        let mut seen = String::new();
        loop {
            // Errors while the host or BMC reboots are expected; the client already retried.
            match self.job(id).await {
                Ok(j) => {
                    let key = format!("{}|{:?}|{:?}", j.state, j.percent, j.message);
                    if key != seen {
                        progress(&j);
                        seen = key;
                    }
                    if stop(&j) {
                        return Ok(j);
                    }
                }
                Err(e) => debug!(error = %e, "job not readable yet"),
            }
            if Instant::now() >= deadline {
                return Err(RedfishError::Unexpected {
                    path: id.into(),
                    what: format!("job did not get there in {}s", timeout.as_secs()),
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    pub async fn firmware(&self) -> Result<Vec<Firmware>, RedfishError> {
        let root = self.client.root_path().to_owned();
        let coll = self.client.get(&format!("{root}/UpdateService/FirmwareInventory")).await?;
        let mut out = Vec::new();
        for m in members(&coll) {
            out.push(firmware_of(&self.client.get(&m).await?));
        }
        Ok(out)
    }

    /// `UpdateService.SimpleUpdate` pulling `image_uri` (served by `metal6 serve`), applied at
    /// the next reset. Returns the task/job id. No If-Match (412 on newer iDRACs).
    pub async fn simple_update(&self, image_uri: &str) -> Result<String, RedfishError> {
        let root = self.client.root_path().to_owned();
        let svc = self.client.get(&format!("{root}/UpdateService")).await?;
        let target = svc
            .pointer("/Actions/#UpdateService.SimpleUpdate/target")
            .and_then(Value::as_str)
            .map_or_else(|| format!("{root}/UpdateService/Actions/UpdateService.SimpleUpdate"), str::to_owned);
        let body = json!({"ImageURI": image_uri, "TransferProtocol": "HTTP", "@Redfish.OperationApplyTime": "OnReset"});
        let reply = self.client.request(Method::POST, &target, Some(&body)).await?;
        reply
            .location
            .as_deref()
            .and_then(job_id)
            .ok_or_else(|| RedfishError::Unexpected { path: target, what: "SimpleUpdate started no task".into() })
    }
}

/// The system to drive: the one with Id `want`, or the first.
async fn pick_system(client: &Client, root: &Value, want: Option<&str>) -> Result<String, RedfishError> {
    let Some(id) = want else {
        return first_member(client, root, "Systems").await?.ok_or_else(|| RedfishError::Unexpected {
            path: client.root_path().into(),
            what: "no ComputerSystem".into(),
        });
    };
    let all = match link(root, "Systems") {
        Some(p) => members(&client.get(&p).await?),
        None => vec![],
    };
    all.iter().find(|m| m.trim_end_matches('/').rsplit('/').next() == Some(id)).cloned().ok_or_else(|| {
        RedfishError::Unexpected {
            path: client.root_path().into(),
            what: format!("no system {id:?} (the BMC has: {})", all.join(", ")),
        }
    })
}

async fn first_member(client: &Client, root: &Value, coll: &str) -> Result<Option<String>, RedfishError> {
    let Some(path) = link(root, coll) else { return Ok(None) };
    Ok(members(&client.get(&path).await?).into_iter().next())
}

fn link(doc: &Value, key: &str) -> Option<String> {
    doc.get(key).and_then(|v| v.get("@odata.id")).and_then(Value::as_str).map(str::to_owned)
}

fn members(coll: &Value) -> Vec<String> {
    coll.get("Members")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|m| m.get("@odata.id").and_then(Value::as_str)).map(str::to_owned).collect())
        .unwrap_or_default()
}

fn attributes(doc: &Value) -> BTreeMap<String, Value> {
    doc.get("Attributes")
        .and_then(Value::as_object)
        .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// A `SoftwareInventory` member as metal6 sees it.
fn firmware_of(doc: &Value) -> Firmware {
    let g = |k: &str| doc.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    Firmware {
        id: g("Id"),
        name: g("Name"),
        version: g("Version"),
        updateable: doc.get("Updateable").and_then(Value::as_bool).unwrap_or(false),
    }
}

/// The job id at the end of a `Location` (`…/Jobs/JID_…` or `…/Tasks/JID_…`).
pub fn job_id(location: &str) -> Option<String> {
    let last = location.trim_end_matches('/').rsplit('/').next()?;
    (!last.is_empty() && (location.contains("/Jobs/") || location.contains("/Tasks/"))).then(|| last.to_owned())
}

fn job_status(doc: &Value, fallback_id: &str) -> JobStatus {
    let s = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_owned);
    let dell = doc.pointer("/Oem/Dell");
    let ds = |k: &str| dell.and_then(|d| d.get(k)).and_then(Value::as_str).map(str::to_owned);
    let first_msg = doc.pointer("/Messages/0");
    let ms = |k: &str| first_msg.and_then(|m| m.get(k)).and_then(Value::as_str).map(str::to_owned);
    JobStatus {
        id: s("Id").unwrap_or_else(|| fallback_id.rsplit('/').next().unwrap_or(fallback_id).to_owned()),
        state: ds("JobState").or_else(|| s("JobState")).or_else(|| s("TaskState")).unwrap_or_else(|| "Unknown".into()),
        message: ds("Message").or_else(|| s("Message")).or_else(|| ms("Message")),
        message_id: ds("MessageId").or_else(|| s("MessageId")).or_else(|| ms("MessageId")),
        percent: doc.get("PercentComplete").and_then(Value::as_u64),
        job_type: ds("JobType").or_else(|| s("JobType")),
    }
}

/// The pure readers of BMC documents above, for the fuzz target `redfish_json` (`fuzz/`).
/// Not an API: the facade's methods are.
#[doc(hidden)]
pub mod fuzzing {
    use std::collections::BTreeMap;

    use serde_json::Value;

    use super::{Firmware, JobStatus};

    pub fn link(doc: &Value, key: &str) -> Option<String> {
        super::link(doc, key)
    }

    pub fn members(coll: &Value) -> Vec<String> {
        super::members(coll)
    }

    pub fn attributes(doc: &Value) -> BTreeMap<String, Value> {
        super::attributes(doc)
    }

    pub fn job_status(doc: &Value, fallback_id: &str) -> JobStatus {
        super::job_status(doc, fallback_id)
    }

    pub fn firmware_of(doc: &Value) -> Firmware {
        super::firmware_of(doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_from_locations() {
        assert_eq!(
            job_id("/redfish/v1/Managers/iDRAC.Embedded.1/Oem/Dell/Jobs/JID_413079434685").as_deref(),
            Some("JID_413079434685")
        );
        assert_eq!(job_id("/redfish/v1/Managers/iDRAC.Embedded.1/Jobs/JID_1").as_deref(), Some("JID_1"));
        assert_eq!(job_id("/redfish/v1/TaskService/Tasks/JID_9/").as_deref(), Some("JID_9"));
        assert_eq!(job_id("/redfish/v1/SessionService/Sessions/3"), None);
    }

    #[test]
    fn stuck_pr30_job_is_a_failure() {
        let doc = json!({"Id": "JID_1", "JobState": "Scheduled", "Message": "Job processing initialization failure.", "MessageId": "PR30"});
        let j = job_status(&doc, "JID_1");
        assert!(j.failed() && j.is_final());
        let ok = job_status(&json!({"Id": "JID_2", "JobState": "Completed", "MessageId": "PR19"}), "JID_2");
        assert!(ok.succeeded() && !ok.failed());
        let task = job_status(
            &json!({"Id": "JID_3", "TaskState": "Running", "Oem": {"Dell": {"JobState": "Downloading"}}}),
            "x",
        );
        assert_eq!(task.state, "Downloading");
    }
}

/// A CA in the HTTPS boot trust store ([`Bmc::boot_ca`]).
#[derive(Debug, Clone, Serialize)]
pub struct BootCa {
    pub collection: String,
    /// Certificates in the store (after an addition, read back).
    pub count: usize,
    /// The CA is listed (after an addition: listed when read back).
    pub present: bool,
    /// The new member's path when it was added (empty when the BMC did not say).
    pub added: Option<String>,
}

/// True when two PEM texts hold the same first certificate (base64 compared without
/// whitespace: BMCs re-wrap lines and change line ends).
pub fn same_certificate(a: &str, b: &str) -> bool {
    fn body(pem: &str) -> Option<String> {
        let start = pem.find("-----BEGIN CERTIFICATE-----")? + "-----BEGIN CERTIFICATE-----".len();
        let end = start + pem[start..].find("-----END CERTIFICATE-----")?;
        Some(pem[start..end].chars().filter(|c| !c.is_whitespace()).collect())
    }
    matches!((body(a), body(b)), (Some(x), Some(y)) if !x.is_empty() && x == y)
}

#[cfg(test)]
mod cert_tests {
    use super::same_certificate;

    #[test]
    fn certificates_compare_by_content_not_layout() {
        let a = "-----BEGIN CERTIFICATE-----\nMIIB\nAAAA\n-----END CERTIFICATE-----\n";
        let b = "junk\r\n-----BEGIN CERTIFICATE-----\r\nMIIBAAAA\r\n-----END CERTIFICATE-----";
        assert!(same_certificate(a, b));
        assert!(!same_certificate(a, &a.replace("AAAA", "AAAB")));
        assert!(!same_certificate("no pem", "no pem"));
    }
}
