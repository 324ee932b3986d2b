//! The grace table (`xdp.flow_grace`) through the kernel's `BPF_PROG_TEST_RUN`: the maps are
//! written by the balancer's own writer (`Control`, from a parsed config), a backend-set change
//! is an operator's disable or enable, and each frame's backend is read from the destination
//! MAC an `l2-dsr` VIP writes.
//!
//! What a flow should get is computed here from the two Maglev tables (before and after the
//! change) and the flow's Maglev hash, so each flow can be chosen for what it tests: one whose
//! backend moved, one whose previous backend is down, one that did not move. Every probe uses a
//! flow no earlier probe used, so it misses the connection table.
//!
//! No namespace is touched: a test run without `ctx_in` enters on the loopback (ifindex 1),
//! which the next hops here name, so the program answers `XDP_TX` and nothing leaves.
//! Needs root (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON): the tests fail, never skip.

mod lb_support;

use std::{net::IpAddr, time::Duration};

use aya::Ebpf;
use balancer::{
    config::Config,
    dataplane::{
        Control,
        layout::{self, TableMember},
        nexthop::NextHop,
    },
    operator::Operator,
};
use balancer_common::{
    BACKEND_DOWN, BACKEND_UP, FAMILY_IPV4, FlowEvent, FlowKey, IPPROTO_TCP, IPPROTO_UDP,
    NO_BACKEND, PROGRAM_LB, flow_maglev_hash, ipv4_in_16,
};
use balancer_tests::traffic::internet_checksum;

const XDP_TX: u32 = 3;
const TABLE_SIZE: u32 = 65_537;
const PER_VIP: u32 = 8;
const MAX_CONNECTIONS: u32 = 65_536;
const LOOPBACK: u32 = 1;
const MAX_VIPS: u32 = 2;

const VIP: [u8; 4] = [10, 0, 0, 10];
const VIP_PORT: u16 = 80;
/// A UDP VIP on the same address, with the same backends.
const UDP_PORT: u16 = 53;
const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x1b];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc1];
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// Backend `i` (0-based): 10.1.0.(i+1), reached at MAC 02:00:00:00:b0:(i+1).
fn backend(i: usize) -> IpAddr {
    IpAddr::from([10, 1, 0, u8::try_from(i + 1).expect("few backends")])
}

fn backend_mac(i: usize) -> [u8; 6] {
    [
        0x02,
        0,
        0,
        0,
        0xb0,
        u8::try_from(i + 1).expect("few backends"),
    ]
}

fn config(backends: usize, flow_grace: &str) -> Config {
    let list: Vec<String> = (0..backends)
        .map(|i| format!("{{ address = \"{}\" }}", backend(i)))
        .collect();
    let text = format!(
        "[xdp]\ninterface = \"lo\"\nmax_vips = {MAX_VIPS}\ntable_size = {TABLE_SIZE}\n\
         max_backends = {PER_VIP}\nmax_connections = {MAX_CONNECTIONS}\nflow_grace = \"{flow_grace}\"\n\n\
         [[vip]]\nname = \"web\"\naddress = \"10.0.0.10\"\nport = {VIP_PORT}\nprotocol = \"tcp\"\n\
         forward = \"l2-dsr\"\nbackends = [ {list} ]\n\n\
         [[vip]]\nname = \"dns\"\naddress = \"10.0.0.10\"\nport = {UDP_PORT}\nprotocol = \"udp\"\n\
         forward = \"l2-dsr\"\nbackends = [ {list} ]\n",
        list = list.join(", ")
    );
    Config::parse(&text, "grace.toml").unwrap_or_else(|err| panic!("{text}\ndoes not parse: {err}"))
}

/// The program, loaded with the config's map sizes, and the writer of its maps.
struct Rig {
    ebpf: Ebpf,
    control: Control,
    /// Backend `i` is up (true) or disabled, as this test last set it.
    up: Vec<bool>,
}

impl Rig {
    fn new(backends: usize, flow_grace: &str) -> Rig {
        let config = config(backends, flow_grace);
        let xdp = config.xdp.as_ref().expect("[xdp]");
        let (ebpf, maps) = lb_support::load(lb_support::LbSizes {
            max_vips: MAX_VIPS,
            per_vip: PER_VIP,
            table_size: TABLE_SIZE,
            max_connections: MAX_CONNECTIONS,
        });
        let hops: Vec<_> = (0..backends)
            .map(|i| {
                let hop = NextHop {
                    ifindex: LOOPBACK,
                    interface: "lo".into(),
                    src_mac: LB_MAC,
                    dst_mac: backend_mac(i),
                    src_addr: IpAddr::from([10, 1, 0, 254]),
                    mtu: 1500,
                    via_gateway: None,
                };
                (backend(i), Ok(hop))
            })
            .collect();
        let control = Control::new(maps, xdp, &config.vips, LOOPBACK, &hops)
            .unwrap_or_else(|err| panic!("writing the maps: {err}"));
        Rig {
            ebpf,
            control,
            up: vec![true; backends],
        }
    }

    /// The backend-set change: an operator disables or enables backend `i` (of both VIPs).
    fn set_up(&mut self, i: usize, up: bool) {
        self.set_admin(
            i,
            if up {
                Operator::Enabled
            } else {
                Operator::Disabled
            },
        );
        self.up[i] = up;
    }

    fn set_admin(&mut self, i: usize, admin: Operator) {
        self.control
            .set_admin_at(backend(i), admin)
            .unwrap_or_else(|err| panic!("setting backend {i} {admin:?}: {err}"));
    }

    /// The Maglev table `Control` builds for these backends (`up[i]`: backend `i` is up), as
    /// backend numbers (`None`: no backend).
    fn table(&self, up: &[bool]) -> Vec<Option<usize>> {
        let members: Vec<TableMember> = up
            .iter()
            .enumerate()
            .map(|(i, &up)| TableMember {
                address: backend(i),
                weight: 1,
                slot: u32::try_from(i).expect("few"),
                state: if up { BACKEND_UP } else { BACKEND_DOWN },
            })
            .collect();
        layout::build_vip_table(&members, TABLE_SIZE)
            .expect("a table")
            .into_iter()
            .map(|slot| (slot != NO_BACKEND).then_some(slot as usize))
            .collect()
    }

    /// Sends one frame of `flow` (TCP with `flags`, or UDP); the backend it went to.
    fn send(&self, flow: Flow, flags: u8) -> usize {
        self.send_timed(flow, flags).0
    }

    /// As `send`, with the run's duration as the kernel reports it.
    fn send_timed(&self, flow: Flow, flags: u8) -> (usize, Duration) {
        let frame = flow.frame(flags);
        let result = lb_support::run_once(&self.ebpf, PROGRAM_LB, &format!("{flow:?}"), &frame);
        assert_eq!(
            result.verdict, XDP_TX,
            "{flow:?} flags {flags:#04x}: expected XDP_TX towards a backend"
        );
        let backend = (0..self.up.len())
            .find(|&i| result.out[..6] == backend_mac(i))
            .unwrap_or_else(|| {
                panic!("{flow:?}: sent to an unknown MAC {:02x?}", &result.out[..6])
            });
        (backend, result.duration)
    }

    /// The `FlowEvent` counters summed over CPUs.
    fn events(&self) -> Vec<u64> {
        lb_support::flow_events(&self.ebpf)
    }

    fn grace_hits(&self) -> u64 {
        self.events()[FlowEvent::GraceHit as usize]
    }
}

/// A client flow to the VIP: source 100.64.0.0/10 numbered by `id`, so every id is a new flow.
#[derive(Clone, Copy, Debug)]
struct Flow {
    id: u32,
    udp: bool,
}

impl Flow {
    fn src(self) -> [u8; 4] {
        let [_, a, b, _] = self.id.to_be_bytes();
        [100, 64 | (a & 0x3f), b, 1]
    }

    fn port(self) -> u16 {
        10_000 + u16::try_from(self.id & 0xff).expect("a byte")
    }

    /// The Maglev table slot the program reads for this flow (`maglev_hash` in select.rs).
    fn slot(self) -> usize {
        let key = FlowKey {
            src: ipv4_in_16(self.src()),
            dst: ipv4_in_16(VIP),
            src_port_be: self.port().to_be(),
            dst_port_be: self.vip_port().to_be(),
            protocol: self.protocol(),
            family: FAMILY_IPV4,
            _pad: [0; 2],
        };
        let hash = flow_maglev_hash(&key);
        (((hash >> 32) as u32 ^ hash as u32) % TABLE_SIZE) as usize
    }

    fn vip_port(self) -> u16 {
        if self.udp { UDP_PORT } else { VIP_PORT }
    }

    fn protocol(self) -> u8 {
        if self.udp { IPPROTO_UDP } else { IPPROTO_TCP }
    }

    /// `flags`: the TCP flags (ignored for UDP).
    fn frame(self, flags: u8) -> Vec<u8> {
        let mut tcp = Vec::with_capacity(40);
        tcp.extend_from_slice(&self.port().to_be_bytes());
        tcp.extend_from_slice(&self.vip_port().to_be_bytes());
        if self.udp {
            tcp.extend_from_slice(&28u16.to_be_bytes()); // length
            tcp.extend_from_slice(&[0, 0]); // no checksum
        } else {
            tcp.extend_from_slice(&1u32.to_be_bytes()); // seq
            tcp.extend_from_slice(&1u32.to_be_bytes()); // ack
            tcp.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        }
        tcp.extend_from_slice(&[0x61; 20]);
        let total = u16::try_from(20 + tcp.len()).expect("small");
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, self.protocol(), 0, 0]);
        ip.extend_from_slice(&self.src());
        ip.extend_from_slice(&VIP);
        let check = internet_checksum(&ip);
        ip[10..12].copy_from_slice(&check.to_be_bytes());
        let mut frame = Vec::with_capacity(14 + ip.len() + tcp.len());
        frame.extend_from_slice(&LB_MAC);
        frame.extend_from_slice(&CLIENT_MAC);
        frame.extend_from_slice(&0x0800u16.to_be_bytes());
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&tcp);
        frame
    }
}

/// Hands out fresh flows and finds ones whose picks in two tables satisfy a condition.
struct Flows {
    next: u32,
    udp: bool,
}

impl Flows {
    fn find(
        &mut self,
        previous: &[Option<usize>],
        current: &[Option<usize>],
        wanted: impl Fn(Option<usize>, Option<usize>) -> bool,
        what: &str,
    ) -> Flow {
        for _ in 0..100_000 {
            let flow = Flow {
                id: self.next,
                udp: self.udp,
            };
            self.next += 1;
            if wanted(previous[flow.slot()], current[flow.slot()]) {
                return flow;
            }
        }
        panic!("no flow among 100 000 is {what}");
    }
}

/// Backends A, B, C; C is disabled (a change whose previous table names a backend that is now
/// down), then enabled again (a change whose previous table names only up backends).
fn disable_then_enable(rig: &mut Rig) -> (Vec<Option<usize>>, Vec<Option<usize>>) {
    rig.set_up(2, false);
    let previous = rig.table(&[true, true, false]);
    rig.set_up(2, true);
    let current = rig.table(&[true, true, true]);
    (previous, current)
}

#[test]
fn within_grace_a_non_syn_miss_goes_where_the_previous_table_sent_it() {
    let mut rig = Rig::new(3, "60s");
    let mut flows = Flows {
        next: 0,
        udp: false,
    };
    let all = rig.table(&[true, true, true]);

    // C disabled: the previous table's C is down, so its flows take the current pick.
    rig.set_up(2, false);
    let without_c = rig.table(&[true, true, false]);
    let flow = flows.find(&all, &without_c, |p, _| p == Some(2), "on C before");
    let before = rig.grace_hits();
    assert_eq!(
        Some(rig.send(flow, TCP_ACK)),
        without_c[flow.slot()],
        "a previous backend that is down must not be used"
    );
    assert_eq!(rig.grace_hits(), before, "no grace hit for a down backend");

    // C enabled again: flows the new table moves to C stay where the previous table put them.
    rig.set_up(2, true);
    let previous = without_c;
    let current = rig.table(&[true, true, true]);
    let moved = |p: Option<usize>, c: Option<usize>| p.is_some() && p != c;
    let flow = flows.find(&previous, &current, moved, "moved by the change");
    let before = rig.grace_hits();
    assert_eq!(
        Some(rig.send(flow, TCP_ACK)),
        previous[flow.slot()],
        "a non-SYN packet that misses the connection table goes to the previous table's backend"
    );
    assert_eq!(rig.grace_hits(), before + 1, "counted as grace_hit");
    // Its connection-table entry now holds that backend.
    assert_eq!(Some(rig.send(flow, TCP_ACK)), previous[flow.slot()]);
    assert_eq!(
        rig.grace_hits(),
        before + 1,
        "a table hit is not a grace hit"
    );

    let flow = flows.find(&previous, &current, moved, "moved by the change");
    assert_eq!(
        Some(rig.send(flow, TCP_SYN)),
        current[flow.slot()],
        "a SYN starts a flow: the current table picks"
    );

    let flow = flows.find(&previous, &current, |p, c| p == c, "not moved");
    let before = rig.grace_hits();
    assert_eq!(Some(rig.send(flow, TCP_ACK)), current[flow.slot()]);
    assert_eq!(rig.grace_hits(), before, "the same pick is no grace hit");
}

#[test]
fn flow_grace_zero_sends_a_non_syn_miss_to_the_current_pick() {
    let mut rig = Rig::new(3, "0s");
    let (previous, current) = disable_then_enable(&mut rig);
    let mut flows = Flows {
        next: 0,
        udp: false,
    };
    let flow = flows.find(
        &previous,
        &current,
        |p, c| p.is_some() && p != c,
        "moved by the change",
    );
    assert_eq!(Some(rig.send(flow, TCP_ACK)), current[flow.slot()]);
    assert_eq!(rig.grace_hits(), 0);
}

#[test]
fn after_the_grace_a_non_syn_miss_goes_to_the_current_pick() {
    let mut rig = Rig::new(3, "1s");
    let (previous, current) = disable_then_enable(&mut rig);
    // Not a timing assertion: the check only needs the deadline to have passed, and a sleep
    // of 1.5 s guarantees that on the monotonic clock both sides read.
    std::thread::sleep(Duration::from_millis(1_500));
    let mut flows = Flows {
        next: 0,
        udp: false,
    };
    let flow = flows.find(
        &previous,
        &current,
        |p, c| p.is_some() && p != c,
        "moved by the change",
    );
    assert_eq!(
        Some(rig.send(flow, TCP_ACK)),
        current[flow.slot()],
        "the previous table no longer counts after flow_grace"
    );
    assert_eq!(rig.grace_hits(), 0);
}

/// Measured, not asserted (the share depends on the Maglev permutation): of 10 000 flows, how
/// many a backend removal and a backend addition move, and how many of the moved ones the grace
/// table keeps on their backend. Each flow's destination is asserted.
#[test]
fn share_of_moved_flows_kept() {
    const FLOWS: u32 = 10_000;
    const BACKENDS: usize = 5;
    let mut rig = Rig::new(BACKENDS, "60s");
    let mut next = 0;
    for (label, up) in [("removed", false), ("added", true)] {
        let previous = rig.table(&rig.up.clone());
        rig.set_up(BACKENDS - 1, up);
        let current = rig.table(&rig.up.clone());
        let (mut moved, mut kept) = (0u32, 0u32);
        for _ in 0..FLOWS {
            let flow = Flow {
                id: next,
                udp: false,
            };
            next += 1;
            let (p, c) = (previous[flow.slot()], current[flow.slot()]);
            let got = rig.send(flow, TCP_ACK);
            if p == c {
                assert_eq!(Some(got), c, "{flow:?}: not moved");
                continue;
            }
            moved += 1;
            let usable = p.is_some_and(|p| rig.up[p]);
            let expected = if usable { p } else { c };
            assert_eq!(
                Some(got),
                expected,
                "{flow:?}: previous {p:?}, current {c:?}"
            );
            if Some(got) == p {
                kept += 1;
            }
        }
        println!(
            "grace share: one of {BACKENDS} backends {label}: {moved} of {FLOWS} flows moved, \
             {kept} of them kept on their previous backend ({:.1}%)",
            f64::from(kept) * 100.0 / f64::from(moved.max(1))
        );
    }
}

#[test]
fn a_draining_previous_backend_keeps_its_flows_and_udp_uses_the_current_table() {
    let mut rig = Rig::new(3, "60s");
    let previous = rig.table(&[true, true, true]);
    // Draining takes C out of the table (no new flows) but keeps its established ones.
    rig.set_admin(2, Operator::Draining);
    let current = rig.table(&[true, true, false]);
    let on_c = |p: Option<usize>, _: Option<usize>| p == Some(2);
    let flow = Flows {
        next: 0,
        udp: false,
    }
    .find(&previous, &current, on_c, "on C before");
    assert_eq!(
        rig.send(flow, TCP_ACK),
        2,
        "a non-SYN miss of a flow on a draining backend stays there"
    );
    assert_eq!(rig.grace_hits(), 1);
    let flow = Flows {
        next: 1_000_000,
        udp: true,
    }
    .find(&previous, &current, on_c, "on C before");
    assert_eq!(
        Some(rig.send(flow, 0)),
        current[flow.slot()],
        "UDP always uses the current table"
    );
    assert_eq!(rig.grace_hits(), 1);
}

/// Measured, not asserted: what the grace lookup adds to a non-SYN TCP miss (the only packets
/// that make it). Median over 10 000 new flows, one `BPF_PROG_TEST_RUN` call per packet on an
/// unattached program (so slower than a driver's call, and ~30 ns of every figure is the timing
/// itself): a miss right after a change with `flow_grace` on, and with it off, interleaved flow
/// by flow so both see the same load on the machine.
#[test]
fn cost_of_the_grace_lookup() {
    const FLOWS: u32 = 10_000;
    let graces = ["0s", "60s"];
    let mut rigs: Vec<Rig> = graces.iter().map(|grace| Rig::new(3, grace)).collect();
    let tables: Vec<_> = rigs.iter_mut().map(disable_then_enable).collect();
    let mut ns = vec![Vec::new(), Vec::new()];
    for id in 0..FLOWS {
        let flow = Flow { id, udp: false };
        for (i, rig) in rigs.iter().enumerate() {
            let (previous, current) = &tables[i];
            let (got, took) = rig.send_timed(flow, TCP_ACK);
            let kept = graces[i] != "0s" && previous[flow.slot()] != current[flow.slot()];
            let expected = if kept {
                previous[flow.slot()]
            } else {
                current[flow.slot()]
            };
            assert_eq!(
                Some(got),
                expected,
                "{flow:?} with flow_grace {}",
                graces[i]
            );
            ns[i].push(took.as_nanos());
        }
    }
    let medians: Vec<(&str, u128)> = graces
        .iter()
        .zip(&mut ns)
        .map(|(grace, ns)| {
            ns.sort_unstable();
            (*grace, ns[ns.len() / 2])
        })
        .collect();
    println!("grace cost: median ns per non-SYN TCP miss, by flow_grace: {medians:?}");
}
