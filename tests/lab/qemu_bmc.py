#!/usr/bin/env python3
"""Redfish BMC simulator for the QEMU lab nodes: a test peer for `metal6`, NOT a real BMC.

Why it exists: sushy-tools' libvirt driver turns a `UefiHttp` boot override into a downloaded
virtual CD (notes/dell-idrac-redfish.md, "libvirt driver: endpoint matrix": the image lands in
a pool and is attached as a SATA cdrom, the target reads back as `Cd`), so the firmware's own
IPv6 HTTP boot never runs. This simulator owns the QEMU process itself and drives it over QMP,
so a Redfish "boot once from UefiHttp, power on" really makes OVMF netboot over IPv6.

One process serves several nodes; each node is one BMC on its own [address]:port (HTTPS with
the given certificate), with its own QEMU guest. Python stdlib only.

What it cannot prove: real BMC timing (POST takes minutes, PowerState lags the host, a BMC
answers slowly and sometimes 503), job queues and settings that apply on reset (see
tests/redfish/idrac_sim.py for the Dell ones), firmware quirks (dropped overrides, metal-operator#80;
sushy rewriting UefiHttp without a URI to Pxe), session limits, certificate or account
management. A test passing here shows the Redfish conversation and the netboot chain fit
together, not that a given vendor's BMC behaves this way.

Behaviours, and where each is copied from:
  - Service root anonymous, everything else under /redfish/v1 needs HTTP Basic or the
    X-Auth-Token of a live session; 401 + `WWW-Authenticate: Basic` otherwise. POST
    SessionService/Sessions {UserName, Password} -> 201 + X-Auth-Token + Location; DELETE it
    -> 204 (notes/dell-idrac-redfish.md §1; crates/redfish/src/client.rs logs in with a session
    when the root links them, with Basic otherwise). Passwords and tokens are never logged.
  - PATCH Systems/1 {"Boot": {...}}: BootSourceOverrideEnabled Once/Continuous/Disabled, Target
    None/Pxe/UefiHttp/Hdd (else 400 PropertyValueNotInList), Mode UEFI only (Legacy -> 400, as
    13G iDRACs answer UEFI-only targets in Legacy mode: notes §7), HttpBootUri echoed and
    otherwise unused. Any other property -> 400 PropertyNotWritable. Answers 204.
  - A one-time override is consumed when the next boot starts, i.e. when QEMU is started
    (Enabled -> Disabled, Target -> None): Redfish ComputerSystem.Boot semantics, as in
    idrac_sim.py. Pxe/UefiHttp put the NIC first (bootindex 0, disk 1); Hdd or no override put
    the disk first and the NIC second, so a blank disk falls through to the network like a real
    server's boot order (crates/cli/src/lab_cmd.rs). UefiHttp adds
    `-fw_cfg opt/org.tianocore/IPv6PXESupport=n` (HTTP boot options only); Pxe leaves PXEv6 on
    (notes/ovmf-ipv6-http-boot.md §6, §10). Without an override the node's last network target
    decides (UefiHttp until a Pxe override was used).
  - QEMU command: the one lab_cmd.rs runs (q35, TCG, OVMF 4M, virtio disk and NIC without option
    ROM, no IPv4 in the firmware, a 3 s front-page wait for the DAD race, notes §5-6), with
    `-no-reboot` instead of `-no-shutdown`, the serial console appended to serial.log, and two
    QMP sockets: qmp.sock (the simulator's) and monitor.sock (free for tests and people: QEMU
    serves one client per QMP socket). `nonet` nodes get `-nic none`.
  - Power: PowerState is On while the node's QEMU runs (and in the gap of a reboot). Because of
    `-no-reboot` every reset exits QEMU; a QMP SHUTDOWN whose reason contains "reset"
    (guest-reset, host-qmp-system-reset) makes the simulator start QEMU again at once with the
    current boot settings: a reboot, one more boot, PowerState stays On. Any other exit
    (guest-shutdown, host-qmp-quit, a crash) -> Off.
  - ComputerSystem.Reset: On (no-op when On, still 204), ForceOff (QMP quit, SIGKILL after 5 s),
    GracefulShutdown (QMP system_powerdown, SIGKILL after 60 s: OVMF alone ignores the power
    button), ForceRestart / PowerCycle (stop, then a new boot; from Off they power on); other
    values -> 400 ActionParameterNotSupported. Answers 204 at once (notes §8; poll PowerState
    afterwards); the work runs in the node's worker thread, in request order.
  - SIGTERM / SIGINT / exit: every QEMU is killed and the sockets removed.

GET /sim/state (no auth) on each node's listener: that node's power state, counters (power_ons,
boots, power_cycles, resets by type), boot_log, pending override, request concurrency and
sessions, for tests. --latency-ms makes every Redfish answer take that long (a BMC is slow), so a
client's per-BMC concurrency limit shows in peak_in_flight.

Per node, in WORKDIR/NAME/: disk.qcow2 (created once), OVMF_VARS.fd (copied once), serial.log
and qemu.log (appended across boots), qmp.sock and monitor.sock (while QEMU runs).
Run it inside the lab's network namespace (`ip netns exec`); the taps must exist already.
"""

import argparse
import atexit
import base64
import ctypes
import hmac
import json
import os
import queue
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

R = "/redfish/v1"
SYSTEMS = R + "/Systems"
SYSTEM = SYSTEMS + "/1"
RESET = SYSTEM + "/Actions/ComputerSystem.Reset"
NICS = SYSTEM + "/EthernetInterfaces"
NIC = NICS + "/NIC.1"
MANAGERS = R + "/Managers"
MANAGER = MANAGERS + "/1"
SESSION_SERVICE = R + "/SessionService"
SESSIONS = SESSION_SERVICE + "/Sessions"

REG = "Base.1.8."
RESET_TYPES = ["On", "ForceOff", "GracefulShutdown", "ForceRestart", "PowerCycle"]
TARGETS = ["None", "Pxe", "UefiHttp", "Hdd"]
ENABLED = ["Disabled", "Once", "Continuous"]
NETWORK = ("Pxe", "UefiHttp")
REALM = 'Basic realm="metal6-lab-sim"'

FORCE_OFF_GRACE = 5.0
GRACEFUL_TIMEOUT = 60.0
QMP_CONNECT_TIMEOUT = 10.0

_libc = ctypes.CDLL(None, use_errno=True)
SHUTTING_DOWN = threading.Event()


def log(msg):
    print(f"qemu_bmc: {msg}", file=sys.stderr, flush=True)


def esc(path):
    """A path as a QEMU option value (commas are doubled)."""
    return str(path).replace(",", ",,")


def die_with_parent():
    # In the child between fork and exec: SIGKILL when the thread that started it (the node's
    # worker, alive as long as the simulator) goes away, so a SIGKILLed simulator leaves no VM.
    _libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG


def error(status, message, message_id):
    return status, {"error": {"code": REG + "GeneralError", "message": message,
                              "@Message.ExtendedInfo": [{"MessageId": REG + message_id, "Message": message,
                                                         "Severity": "Warning"}]}}


class Qemu:
    """One QEMU process: one boot."""

    def __init__(self, proc, logfile):
        self.proc = proc
        self.logfile = logfile
        self.sock = None
        self.sock_lock = threading.Lock()
        self.reason = None  # the last QMP SHUTDOWN reason
        self.stopping = False  # the simulator is ending it: no restart, the stopper sets the state
        self.no_restart = False
        self.reader = None  # the QMP event reader thread

    def cmd(self, execute):
        with self.sock_lock:
            if self.sock is None:
                return False
            try:
                self.sock.sendall(json.dumps({"execute": execute}).encode() + b"\n")
                return True
            except OSError:
                return False

    def alive(self):
        return self.proc.poll() is None


class Node:
    def __init__(self, spec, args):
        parts = spec.split(",")
        if len(parts) not in (5, 6) or (len(parts) == 6 and parts[5] != "nonet"):
            raise SystemExit(f"--node {spec!r}: expected NAME,LISTEN_ADDR,PORT,MAC,TAP[,nonet]")
        self.name, addr, port, mac, self.tap = parts[:5]
        self.nonet = len(parts) == 6
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name):
            raise SystemExit(f"--node {spec!r}: bad node name")
        self.addr = addr.strip("[]")
        try:
            socket.inet_pton(socket.AF_INET6, self.addr.split("%")[0])
        except OSError:
            raise SystemExit(f"--node {spec!r}: {addr} is not an IPv6 address") from None
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise SystemExit(f"--node {spec!r}: bad port")
        self.port = int(port)
        if not re.fullmatch(r"(?:[0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}", mac):
            raise SystemExit(f"--node {spec!r}: bad MAC {mac}")
        self.mac = mac.lower()
        if not self.nonet and not re.fullmatch(r"[A-Za-z0-9._-]{1,15}", self.tap):
            raise SystemExit(f"--node {spec!r}: bad tap name")
        self.args = args
        self.dir = os.path.join(os.path.abspath(args.workdir), self.name)
        self.disk = os.path.join(self.dir, "disk.qcow2")
        self.vars = os.path.join(self.dir, "OVMF_VARS.fd")
        self.serial = os.path.join(self.dir, "serial.log")
        self.qemu_log = os.path.join(self.dir, "qemu.log")
        self.qmp_path = os.path.join(self.dir, "qmp.sock")
        self.monitor_path = os.path.join(self.dir, "monitor.sock")

        self.lock = threading.RLock()
        self.ops = queue.Queue()
        self.qemu = None  # the running Qemu
        self.rebooting = False  # between a reset's exit and the next start: still On
        self.gen = 0  # bumped by every Redfish power action: stale reboots are dropped
        self.override = {"enabled": "Disabled", "target": "None"}
        self.http_boot_uri = None
        self.last_net = "UefiHttp"
        self.power_ons = 0
        self.boots = 0
        self.power_cycles = 0
        self.resets = {}
        self.boot_log = []
        self.requests = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.sessions = {}  # token -> session id
        self.session_seq = 0
        self.peak_sessions = 0

    # --- files --------------------------------------------------------------------------
    def prepare(self):
        os.makedirs(self.dir, exist_ok=True)
        if not os.path.exists(self.disk):
            subprocess.run([self.args.qemu_img, "create", "-q", "-f", "qcow2", self.disk, f"{self.args.disk_gib}G"],
                           check=True)
        if not os.path.exists(self.vars):
            shutil.copyfile(self.args.ovmf_vars, self.vars)
        self.remove_sockets()

    def remove_sockets(self):
        for p in (self.qmp_path, self.monitor_path):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass

    # --- state --------------------------------------------------------------------------
    def power_state(self):
        with self.lock:
            return "On" if self.qemu is not None or self.rebooting else "Off"

    def state(self):
        with self.lock:
            q = self.qemu
            return {"node": self.name, "power_state": self.power_state(), "power_ons": self.power_ons,
                    "boots": self.boots, "power_cycles": self.power_cycles, "resets": dict(self.resets),
                    "boot_log": list(self.boot_log), "override": dict(self.override),
                    "http_boot_uri": self.http_boot_uri, "last_network_target": self.last_net,
                    "requests": self.requests, "in_flight": self.in_flight,
                    "peak_in_flight": self.peak_in_flight, "sessions_open": len(self.sessions),
                    "peak_sessions": self.peak_sessions, "qemu_pid": q.proc.pid if q else None}

    # --- QEMU ---------------------------------------------------------------------------
    def qemu_args(self, net_first, http_only):
        a = self.args
        disk_idx, nic_idx = (1, 0) if net_first else (0, 1)
        # A unix socket path has 107 bytes at most: QEMU runs in the node's directory, so a
        # relative name does when the absolute path is too long.
        qmp = self.qmp_path if len(self.qmp_path) < 100 else "qmp.sock"
        mon = self.monitor_path if len(self.monitor_path) < 100 else "monitor.sock"
        cmd = [a.qemu, "-name", self.name, "-machine", "q35", "-accel", "tcg", "-cpu", "max",
               "-smp", str(a.smp), "-m", str(a.memory), "-display", "none",
               "-chardev", f"file,id=s0,path={esc(self.serial)},append=on", "-serial", "chardev:s0",
               "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={esc(a.ovmf_code)}",
               "-drive", f"if=pflash,format=raw,unit=1,file={esc(self.vars)}",
               "-drive", f"if=none,id=d0,format=qcow2,file={esc(self.disk)},discard=unmap,detect-zeroes=unmap",
               "-device", f"virtio-blk-pci,drive=d0,bootindex={disk_idx}"]
        if self.nonet:
            cmd += ["-nic", "none"]
        else:
            cmd += ["-netdev", f"tap,id=n0,ifname={self.tap},script=no,downscript=no",
                    "-device", f"virtio-net-pci,netdev=n0,romfile=,bootindex={nic_idx},mac={self.mac}"]
        cmd += ["-fw_cfg", "name=opt/org.tianocore/IPv4Support,string=n",
                "-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n"]
        if http_only:
            cmd += ["-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n"]
        cmd += ["-boot", "menu=on,splash-time=3000", "-no-reboot",
                "-qmp", f"unix:{esc(qmp)},server=on,wait=off",
                "-qmp", f"unix:{esc(mon)},server=on,wait=off"]
        return cmd

    def start(self, cause):
        """Starts a boot (worker thread only). The pending override is consumed here."""
        if SHUTTING_DOWN.is_set():
            return
        with self.lock:
            enabled, target = self.override["enabled"], self.override["target"]
            used = target if enabled in ("Once", "Continuous") and target in ("Pxe", "UefiHttp", "Hdd") else None
            if used is not None and enabled == "Once":
                self.override = {"enabled": "Disabled", "target": "None"}
            if used in NETWORK:
                self.last_net = used
            net_first = used in NETWORK
            http_only = used == "UefiHttp" if used in NETWORK else self.last_net == "UefiHttp"
            self.boots += 1
            n = self.boots
            entry = {"ts_ms": int(time.time() * 1000), "override": used,
                     "first": "network" if net_first else "disk", "cause": cause}
            self.boot_log.append(entry)
        cmd = self.qemu_args(net_first, http_only)
        self.remove_sockets()
        logfile = open(self.qemu_log, "ab")
        logfile.write(f"=== qemu_bmc {time.strftime('%Y-%m-%dT%H:%M:%S')} boot {n} ({cause}, "
                      f"override {used}, first {entry['first']}): {' '.join(cmd)}\n".encode())
        logfile.flush()
        try:
            proc = subprocess.Popen(cmd, cwd=self.dir, stdin=subprocess.DEVNULL, stdout=logfile,
                                    stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)
        except OSError as e:
            logfile.write(f"=== qemu_bmc: cannot start QEMU: {e}\n".encode())
            logfile.close()
            log(f"{self.name}: cannot start QEMU: {e}")
            with self.lock:
                self.rebooting = False
            return
        q = Qemu(proc, logfile)
        with self.lock:
            self.qemu = q
            self.rebooting = False
        if SHUTTING_DOWN.is_set():  # the cleanup ran while this one started
            self.stop(q, grace=0)
            return
        log(f"{self.name}: boot {n} ({cause}, override {used}, first {entry['first']}) pid {proc.pid}")
        q.reader = threading.Thread(target=self.qmp_reader, args=(q,), daemon=True, name=f"{self.name}-qmp")
        q.reader.start()
        threading.Thread(target=self.watch, args=(q,), daemon=True, name=f"{self.name}-wait").start()

    def qmp_connect_path(self):
        if len(self.qmp_path.encode()) < 108:
            return self.qmp_path, None
        fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        return f"/proc/self/fd/{fd}/qmp.sock", fd

    def qmp_reader(self, q):
        deadline = time.monotonic() + QMP_CONNECT_TIMEOUT
        sock = None
        while q.alive() and time.monotonic() < deadline and not q.stopping:
            path, fd = self.qmp_connect_path()
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
                sock = s
                break
            except OSError:
                s.close()
                time.sleep(0.05)
            finally:
                if fd is not None:
                    os.close(fd)
        if sock is None:
            if q.alive() and not q.stopping:
                log(f"{self.name}: no QMP socket after {QMP_CONNECT_TIMEOUT:.0f} s; power actions will kill QEMU")
            return
        try:
            f = sock.makefile("rb")
            f.readline()  # the greeting
            sock.sendall(b'{"execute": "qmp_capabilities"}\n')
            with q.sock_lock:
                q.sock = sock
            for line in f:
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if msg.get("event") == "SHUTDOWN":
                    reason = (msg.get("data") or {}).get("reason", "")
                    with self.lock:
                        q.reason = reason
                        if "reset" in reason and not q.stopping and not q.no_restart and self.qemu is q:
                            self.rebooting = True
                    if "reset" in reason:
                        # -no-reboot: QEMU exits now; if it did not, the restart would wait for ever.
                        t = threading.Timer(5.0, self.kill_if_running, args=(q,))
                        t.daemon = True
                        t.start()
        except OSError:
            pass
        finally:
            with q.sock_lock:
                q.sock = None
            sock.close()

    @staticmethod
    def kill_if_running(q):
        if q.alive():
            q.proc.kill()

    def watch(self, q):
        """Waits for one QEMU to exit: a reset becomes the next boot, anything else Off."""
        rc = q.proc.wait()
        q.logfile.close()
        # The SHUTDOWN event is sent before QEMU exits, but the reader may not have read it yet:
        # it ends at the socket's EOF, after every event.
        q.reader.join(3)
        with self.lock:
            if self.qemu is not q or q.stopping:
                return
            self.qemu = None
            restart = q.reason is not None and "reset" in q.reason and not q.no_restart
            self.rebooting = restart and not SHUTTING_DOWN.is_set()
            gen = self.gen
        log(f"{self.name}: QEMU pid {q.proc.pid} exited ({rc}, {q.reason or 'no SHUTDOWN event'})"
            + ("; rebooting" if restart else "; Off"))
        if restart:
            self.ops.put(("reboot", gen))

    def stop(self, q, grace=FORCE_OFF_GRACE):
        """Ends one QEMU (worker thread or shutdown): QMP quit, SIGKILL after `grace` s."""
        with self.lock:
            q.stopping = True
        if grace > 0 and q.alive() and q.cmd("quit"):
            try:
                q.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        if q.alive():
            q.proc.kill()
        try:
            q.proc.wait(10)
        except subprocess.TimeoutExpired:
            log(f"{self.name}: QEMU pid {q.proc.pid} survives SIGKILL")
        with self.lock:
            if self.qemu is q:
                self.qemu = None

    def graceful_timeout(self, q):
        with self.lock:
            if self.qemu is not q or not q.alive():
                return
            q.no_restart = True
        log(f"{self.name}: GracefulShutdown: still running after {GRACEFUL_TIMEOUT:.0f} s; killing it")
        q.proc.kill()

    # --- the worker: power actions in request order ------------------------------------
    def worker(self):
        while True:
            op, arg = self.ops.get()
            try:
                if op == "reboot":
                    with self.lock:
                        go = arg == self.gen and self.qemu is None and self.rebooting
                    if go:
                        self.start("reboot")
                elif op == "reset":
                    self.reset(arg)
            except Exception as e:  # noqa: BLE001 - the worker must survive
                log(f"{self.name}: {op} {arg}: {e!r}")

    def reset(self, rt):
        log(f"{self.name}: {rt} (PowerState {self.power_state()})")
        with self.lock:
            self.gen += 1
            q = self.qemu
            on = q is not None or self.rebooting
        if rt == "On":
            if not on:
                with self.lock:
                    self.power_ons += 1
                self.start("power-on")
        elif rt == "ForceOff":
            with self.lock:
                self.rebooting = False
            if q is not None:
                self.stop(q)
        elif rt == "GracefulShutdown":
            with self.lock:
                self.rebooting = False
            if q is not None:
                with self.lock:
                    q.no_restart = True
                if not q.cmd("system_powerdown"):
                    log(f"{self.name}: GracefulShutdown without QMP: SIGTERM")
                    q.proc.terminate()
                t = threading.Timer(GRACEFUL_TIMEOUT, self.graceful_timeout, args=(q,))
                t.daemon = True
                t.start()
        elif rt in ("ForceRestart", "PowerCycle"):
            if on:
                with self.lock:
                    self.power_cycles += 1
                    self.rebooting = True  # On through the gap
                if q is not None:
                    self.stop(q)
                self.start(rt.lower())
            else:
                with self.lock:
                    self.power_ons += 1
                self.start("power-on")

    def shutdown(self):
        with self.lock:
            q = self.qemu
            self.rebooting = False
        if q is not None:
            self.stop(q, grace=0)
        self.remove_sockets()

    # --- Redfish documents -------------------------------------------------------------
    def system_doc(self):
        with self.lock:
            boot = {"BootSourceOverrideEnabled": self.override["enabled"],
                    "BootSourceOverrideTarget": self.override["target"],
                    "BootSourceOverrideMode": "UEFI",
                    "BootSourceOverrideTarget@Redfish.AllowableValues": list(TARGETS),
                    "BootSourceOverrideMode@Redfish.AllowableValues": ["UEFI"]}
            if self.http_boot_uri is not None:
                boot["HttpBootUri"] = self.http_boot_uri
            power = self.power_state()
        return {"@odata.id": SYSTEM, "@odata.type": "#ComputerSystem.v1_13_0.ComputerSystem", "Id": "1",
                "Name": self.name, "SystemType": "Virtual", "Manufacturer": "QEMU", "Model": "metal6 lab VM",
                "SerialNumber": self.name, "PowerState": power,
                "Status": {"State": "Enabled", "Health": "OK"},
                "ProcessorSummary": {"Count": self.args.smp},
                "MemorySummary": {"TotalSystemMemoryGiB": round(self.args.memory / 1024, 2)},
                "Boot": boot, "EthernetInterfaces": {"@odata.id": NICS},
                "Links": {"ManagedBy": [{"@odata.id": MANAGER}]},
                "Actions": {"#ComputerSystem.Reset": {"target": RESET,
                                                      "ResetType@Redfish.AllowableValues": list(RESET_TYPES)}}}

    def nic_doc(self):
        return {"@odata.id": NIC, "@odata.type": "#EthernetInterface.v1_6_0.EthernetInterface", "Id": "NIC.1",
                "Name": "virtio-net", "MACAddress": self.mac, "PermanentMACAddress": self.mac,
                "LinkStatus": "NoLink" if self.nonet else "LinkUp",
                "Status": {"State": "Disabled" if self.nonet else "Enabled", "Health": "OK"}}

    def get(self, path):
        coll = lambda p, name, ms: {"@odata.id": p, "Name": name, "Members": [{"@odata.id": m} for m in ms],
                                    "Members@odata.count": len(ms)}
        if path == SYSTEMS:
            return coll(SYSTEMS, "Computer System Collection", [SYSTEM])
        if path == SYSTEM:
            return self.system_doc()
        if path == NICS:
            return coll(NICS, "Ethernet Interface Collection", [NIC])
        if path == NIC:
            return self.nic_doc()
        if path == MANAGERS:
            return coll(MANAGERS, "Manager Collection", [MANAGER])
        if path == MANAGER:
            return {"@odata.id": MANAGER, "@odata.type": "#Manager.v1_10_0.Manager", "Id": "1",
                    "Name": f"{self.name} BMC", "ManagerType": "BMC", "FirmwareVersion": "metal6-lab-sim",
                    "Status": {"State": "Enabled", "Health": "OK"},
                    "Links": {"ManagerForServers": [{"@odata.id": SYSTEM}]}}
        if path == SESSION_SERVICE:
            return {"@odata.id": SESSION_SERVICE, "@odata.type": "#SessionService.v1_1_8.SessionService",
                    "Id": "SessionService", "Name": "Session Service", "ServiceEnabled": True,
                    "SessionTimeout": 1800, "Sessions": {"@odata.id": SESSIONS}}
        with self.lock:
            ids = sorted(self.sessions.values())
        if path == SESSIONS:
            return coll(SESSIONS, "Session Collection", [f"{SESSIONS}/{i}" for i in ids])
        if path.startswith(SESSIONS + "/") and path[len(SESSIONS) + 1:] in [str(i) for i in ids]:
            sid = path[len(SESSIONS) + 1:]
            return {"@odata.id": path, "@odata.type": "#Session.v1_3_0.Session", "Id": sid,
                    "Name": f"Session {sid}", "UserName": self.args.user}
        return None

    def patch_system(self, body):
        for k in body:
            if k != "Boot" and not k.startswith("@odata."):
                return error(400, f"The property {k} is a read only property and cannot be assigned a value.",
                             "PropertyNotWritable")
        boot = body.get("Boot", {})
        if not isinstance(boot, dict):
            return error(400, "Boot must be an object.", "PropertyValueTypeError")
        allowed = {"BootSourceOverrideEnabled": ENABLED, "BootSourceOverrideTarget": TARGETS,
                   "BootSourceOverrideMode": ["UEFI"]}
        for k, v in boot.items():
            if k == "HttpBootUri":
                if v is not None and not isinstance(v, str):
                    return error(400, "HttpBootUri must be a string.", "PropertyValueTypeError")
                continue
            if k not in allowed:
                return error(400, f"The property Boot/{k} is a read only property and cannot be assigned a value.",
                             "PropertyNotWritable")
            if v not in allowed[k]:
                return error(400, f"The value {v!r} for the property {k} is not in the list of acceptable values.",
                             "PropertyValueNotInList")
        with self.lock:
            if "BootSourceOverrideEnabled" in boot:
                self.override["enabled"] = boot["BootSourceOverrideEnabled"]
            if "BootSourceOverrideTarget" in boot:
                self.override["target"] = boot["BootSourceOverrideTarget"]
            if "HttpBootUri" in boot:
                self.http_boot_uri = boot["HttpBootUri"]
        return 204, None

    def post_reset(self, body):
        rt = body.get("ResetType")
        if rt is None:
            return error(400, "The action ComputerSystem.Reset requires the parameter ResetType.",
                         "ActionParameterMissing")
        if rt not in RESET_TYPES:
            return error(400, f"The parameter ResetType for the action ComputerSystem.Reset does not support "
                         f"the value {rt!r}.", "ActionParameterNotSupported")
        with self.lock:
            self.resets[rt] = self.resets.get(rt, 0) + 1
        self.ops.put(("reset", rt))
        return 204, None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "metal6-lab-sim"
    sys_version = ""
    timeout = 120  # idle keep-alive connections end

    def log_message(self, fmt, *a):
        # The request line holds no credential (they are headers); still off by default.
        if os.environ.get("QEMU_BMC_LOG"):
            sys.stderr.write(f"qemu_bmc: {self.server.node.name}: {fmt % a}\n")

    @property
    def node(self):
        return self.server.node

    def send(self, status, body=None, headers=None):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json;charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("OData-Version", "4.0")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def read_body(self):
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            n = 0
        raw = self.rfile.read(n) if n > 0 else b""
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    def authorized(self):
        node = self.node
        tok = self.headers.get("X-Auth-Token")
        if tok:
            with node.lock:
                if tok in node.sessions:
                    return True
        auth = self.headers.get("Authorization", "")
        if auth[:6].lower() == "basic ":
            try:
                user, sep, pw = base64.b64decode(auth[6:].strip(), validate=True).partition(b":")
            except ValueError:
                return False
            return bool(sep) and self.credentials_ok(user, pw)
        return False

    def credentials_ok(self, user, pw):
        a = self.node.args
        u = hmac.compare_digest(user, a.user.encode())
        p = hmac.compare_digest(pw, a.password.encode())
        return u and p

    def handle_any(self, method):
        node = self.node
        path = urllib.parse.urlsplit(self.path).path.rstrip("/") or "/"
        body = self.read_body() if method in ("POST", "PATCH", "DELETE") else {}
        if path == "/sim/state":
            if method != "GET":
                return self.send(*error(405, "GET only", "OperationNotAllowed"), {"Allow": "GET"})
            return self.send(200, node.state())
        with node.lock:
            node.requests += 1
            node.in_flight += 1
            node.peak_in_flight = max(node.peak_in_flight, node.in_flight)
        try:
            if node.args.latency_ms:
                time.sleep(node.args.latency_ms / 1000)
            self.send(*self.redfish(method, path, body))
        finally:
            with node.lock:
                node.in_flight -= 1

    def redfish(self, method, path, body):
        """-> (status, body[, headers])"""
        node = self.node
        if body is None:
            return error(400, "The request body is not a valid JSON object.", "MalformedJSON")
        if path == "/redfish":
            return 200, {"v1": R + "/"}
        if path == R:
            if method != "GET":
                return (*error(405, f"{method} is not allowed on {path}", "OperationNotAllowed"), {"Allow": "GET"})
            return 200, {"@odata.id": R + "/", "@odata.type": "#ServiceRoot.v1_5_0.ServiceRoot",
                         "Id": "RootService", "Name": "metal6 lab BMC simulator", "RedfishVersion": "1.8.0",
                         "Vendor": "metal6-lab-sim", "Product": "qemu_bmc.py",
                         "Systems": {"@odata.id": SYSTEMS}, "Managers": {"@odata.id": MANAGERS},
                         "SessionService": {"@odata.id": SESSION_SERVICE},
                         "Links": {"Sessions": {"@odata.id": SESSIONS}}}
        if method == "POST" and path == SESSIONS:
            return self.login(body)
        if not path.startswith(R + "/"):
            return error(404, f"{path} not found", "ResourceMissingAtURI")
        if not self.authorized():
            return (*error(401, "No valid credentials or session.", "NoValidSession"), {"WWW-Authenticate": REALM})
        if method == "GET":
            doc = node.get(path)
            if doc is None:
                return error(404, f"The resource at the URI {path} was not found.", "ResourceMissingAtURI")
            return 200, doc
        if method == "PATCH" and path == SYSTEM:
            return node.patch_system(body)
        if method == "POST" and path == RESET:
            return node.post_reset(body)
        if method == "DELETE" and path.startswith(SESSIONS + "/"):
            sid = path[len(SESSIONS) + 1:]
            with node.lock:
                for tok, i in list(node.sessions.items()):
                    if str(i) == sid:
                        del node.sessions[tok]
                        return 204, None
            return error(404, f"The resource at the URI {path} was not found.", "ResourceMissingAtURI")
        if node.get(path) is not None or path == RESET:
            return error(405, f"{method} is not allowed on {path}", "OperationNotAllowed")
        return error(404, f"The resource at the URI {path} was not found.", "ResourceMissingAtURI")

    def login(self, body):
        node = self.node
        user, pw = body.get("UserName"), body.get("Password")
        if not isinstance(user, str) or not isinstance(pw, str) or not self.credentials_ok(user.encode(), pw.encode()):
            return error(401, "Invalid user name or password.", "NoValidSession")
        token = secrets.token_hex(16)
        with node.lock:
            node.session_seq += 1
            sid = node.session_seq
            node.sessions[token] = sid
            node.peak_sessions = max(node.peak_sessions, len(node.sessions))
        loc = f"{SESSIONS}/{sid}"
        return (201, {"@odata.id": loc, "@odata.type": "#Session.v1_3_0.Session", "Id": str(sid),
                      "Name": f"Session {sid}", "UserName": user},
                {"X-Auth-Token": token, "Location": loc})

    def do_GET(self):
        self.handle_any("GET")

    def do_HEAD(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_PATCH(self):
        self.handle_any("PATCH")

    def do_DELETE(self):
        self.handle_any("DELETE")

    def do_PUT(self):
        self.handle_any("PUT")


class NodeServer(ThreadingHTTPServer):
    """One BMC's listener. TLS is set up in the request's thread, so a slow handshake does not
    hold up the other clients."""

    address_family = socket.AF_INET6
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, node, ctx):
        self.node = node
        self.ctx = ctx
        super().__init__((node.addr, node.port), Handler)

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()

    def finish_request(self, request, client_address):
        request.settimeout(30)
        try:
            tls = self.ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        except (ssl.SSLError, OSError):
            pass
        finally:
            try:
                tls.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            tls.close()

    def handle_error(self, request, client_address):
        log(f"{self.node.name}: error serving {client_address[0]}: {sys.exc_info()[1]!r}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cert", required=True, help="PEM certificate for every listener")
    p.add_argument("--key", required=True, help="its PEM key")
    p.add_argument("--user", default="admin")
    p.add_argument("--password-file", required=True, help="the password (surrounding white space is dropped)")
    p.add_argument("--workdir", required=True, help="per-node files go to WORKDIR/NAME/")
    p.add_argument("--node", action="append", required=True, metavar="NAME,LISTEN_ADDR,PORT,MAC,TAP[,nonet]",
                   help="one BMC + VM; repeat for more. nonet: the VM has no NIC")
    p.add_argument("--qemu", default="/usr/bin/qemu-system-x86_64")
    p.add_argument("--qemu-img", default=None, help="default: qemu-img next to --qemu, else from PATH")
    p.add_argument("--memory", type=int, default=2048, help="MiB")
    p.add_argument("--smp", type=int, default=2)
    p.add_argument("--disk-gib", type=int, default=4, help="size of a new disk.qcow2")
    p.add_argument("--ovmf-code", default="/usr/share/OVMF/OVMF_CODE_4M.fd")
    p.add_argument("--ovmf-vars", default="/usr/share/OVMF/OVMF_VARS_4M.fd", help="template for OVMF_VARS.fd")
    p.add_argument("--latency-ms", type=int, default=0, help="every Redfish answer takes this long (default 0)")
    a = p.parse_args()
    with open(a.password_file, encoding="utf-8") as f:
        a.password = f.read().strip()
    if not a.password:
        raise SystemExit(f"{a.password_file} is empty")
    if a.qemu_img is None:
        side = os.path.join(os.path.dirname(a.qemu), "qemu-img")
        a.qemu_img = side if os.path.exists(side) else (shutil.which("qemu-img") or "qemu-img")
    for f in (a.qemu, a.ovmf_code, a.ovmf_vars, a.cert, a.key):
        if not os.path.exists(f):
            raise SystemExit(f"{f} is missing")

    nodes = [Node(spec, a) for spec in a.node]
    for attr in ("name", "tap"):
        seen = [getattr(n, attr) for n in nodes if not (attr == "tap" and n.nonet)]
        if len(seen) != len(set(seen)):
            raise SystemExit(f"two nodes share a {attr}")
    if len({(n.addr, n.port) for n in nodes}) != len(nodes):
        raise SystemExit("two nodes share a listen address and port")

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.cert, a.key)

    done = {"flag": False}

    def cleanup():
        if done["flag"]:
            return
        done["flag"] = True
        SHUTTING_DOWN.set()
        for n in nodes:
            try:
                n.shutdown()
            except Exception as e:  # noqa: BLE001 - keep cleaning the others
                log(f"{n.name}: cleanup: {e!r}")

    atexit.register(cleanup)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    servers = []
    for n in nodes:
        n.prepare()
        threading.Thread(target=n.worker, daemon=True, name=f"{n.name}-worker").start()
        srv = NodeServer(n, ctx)
        servers.append(srv)
        threading.Thread(target=srv.serve_forever, daemon=True, name=f"{n.name}-http").start()
        print(f"qemu_bmc: {n.name} listening on [{n.addr}]:{n.port}", flush=True)
    print("qemu_bmc: ready", flush=True)
    while not stop.wait(1):
        pass
    log("stopping: killing every QEMU")
    cleanup()
    for s in servers:
        s.server_close()
    sys.exit(0)


if __name__ == "__main__":
    main()
