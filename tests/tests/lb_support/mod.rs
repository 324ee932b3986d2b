//! What the XDP fixture tests (`xdp_forwarding`, `xdp_grace`, `xdp_l4_completeness`) share:
//! the built object loaded for `BPF_PROG_TEST_RUN` with the map sizes a test asks for, and for
//! tests that drive the edge program (`balancer_lb`) with the real userspace map writer
//! (`balancer::dataplane::Control`), the maps that writer takes; one test run of a frame; the
//! per-CPU counters summed.

#![allow(dead_code, reason = "each test file uses a part of it")]

use std::time::Duration;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, PerCpuArray},
    programs::{TestRun, TestRunOptions, Xdp},
};
use balancer::dataplane::{ControlMaps, EBPF_OBJECT};
use balancer_common::{
    Action, Counter, FlowEvent, FlowHashKey, GLOBAL_ACL_FLAGS, GLOBAL_FLOW_SETS, GLOBAL_TABLE_SIZE,
    MAP_ACL_V4, MAP_ACL_V6, MAP_BACKEND_STATS, MAP_BACKENDS, MAP_FLOW_HASH_KEY, MAP_FLOW_STATS,
    MAP_FLOWS, MAP_GRACE, MAP_MAGLEV, MAP_TX_PORTS, MAP_VIP_STATS, MAP_VIPS, PROGRAM_DECAP,
    PROGRAM_LB, flow_sets,
};

/// The map sizes a test's `[xdp]` config asks for (the loader must size the maps alike).
#[derive(Clone, Copy)]
pub struct LbSizes {
    pub max_vips: u32,
    pub per_vip: u32,
    pub table_size: u32,
    pub max_connections: u32,
}

/// What a test asks of the loaded object beyond its map sizes (`Default`: what
/// `balancer run` does without ACLs; only `balancer_lb` loaded).
#[derive(Clone, Copy, Default)]
pub struct LbOptions {
    /// Entries of each ACL trie (`ACL_V4`, `ACL_V6`); `None`: the object's own size.
    pub acl_rules: Option<u32>,
    /// The global ACL scope's `VIP_FLAG_ACL_*` bits (`xdp.acl`), set before load.
    pub global_acl_flags: u8,
    /// Also load `balancer_decap`.
    pub decap: bool,
}

/// Loads the object with maps of `sizes` and `options` (root needed) and loads its programs
/// into the kernel, not attached. The flow-hash key is left to the caller.
pub fn load_object(sizes: LbSizes, options: LbOptions) -> Ebpf {
    let LbSizes {
        max_vips,
        per_vip,
        table_size,
        max_connections,
    } = sizes;
    let sets = flow_sets(max_connections);
    let mut loader = EbpfLoader::new();
    loader
        .map_max_entries(MAP_VIPS, max_vips)
        .map_max_entries(MAP_VIP_STATS, max_vips * Action::COUNT)
        .map_max_entries(MAP_BACKENDS, max_vips * per_vip)
        .map_max_entries(MAP_BACKEND_STATS, max_vips * per_vip)
        .map_max_entries(MAP_MAGLEV, max_vips * 2 * table_size)
        .map_max_entries(MAP_FLOWS, sets)
        .map_max_entries(MAP_GRACE, max_vips)
        .override_global(GLOBAL_FLOW_SETS, &sets, true)
        .override_global(GLOBAL_TABLE_SIZE, &table_size, true)
        .override_global(GLOBAL_ACL_FLAGS, &options.global_acl_flags, true);
    if let Some(rules) = options.acl_rules {
        loader
            .map_max_entries(MAP_ACL_V4, rules)
            .map_max_entries(MAP_ACL_V6, rules);
    }
    let mut ebpf = loader
        .load(EBPF_OBJECT)
        .unwrap_or_else(|err| panic!("loading the eBPF object (root needed): {err:?}"));
    let programs: &[&str] = if options.decap {
        &[PROGRAM_LB, PROGRAM_DECAP]
    } else {
        &[PROGRAM_LB]
    };
    for &name in programs {
        let program: &mut Xdp = ebpf
            .program_mut(name)
            .unwrap_or_else(|| panic!("no program {name}"))
            .try_into()
            .expect("an XDP program");
        program
            .load()
            .unwrap_or_else(|err| panic!("loading {name} (verifier?): {err:?}"));
    }
    ebpf
}

/// Loads `balancer_lb` with maps of `sizes` and a random flow-hash key (root needed), and
/// takes out the maps `Control` writes. The program is loaded, not attached.
pub fn load(sizes: LbSizes) -> (Ebpf, ControlMaps) {
    let mut ebpf = load_object(sizes, LbOptions::default());
    {
        let mut key: Array<_, FlowHashKey> =
            Array::try_from(ebpf.map_mut(MAP_FLOW_HASH_KEY).expect("FLOW_HASH_KEY"))
                .expect("an array");
        key.set(0, FlowHashKey::random(), 0)
            .expect("writing the flow hash key");
    }
    let mut take = |name: &str| ebpf.take_map(name).unwrap_or_else(|| panic!("no {name}"));
    let maps = ControlMaps {
        vips: take(MAP_VIPS).try_into().expect("VIPS"),
        backends: take(MAP_BACKENDS).try_into().expect("BACKENDS"),
        maglev: take(MAP_MAGLEV).try_into().expect("MAGLEV"),
        acl_v4: take(MAP_ACL_V4).try_into().expect("ACL_V4"),
        acl_v6: take(MAP_ACL_V6).try_into().expect("ACL_V6"),
        tx_ports: take(MAP_TX_PORTS).try_into().expect("TX_PORTS"),
        grace: take(MAP_GRACE).try_into().expect("GRACE"),
    };
    (ebpf, maps)
}

/// What one `BPF_PROG_TEST_RUN` of a frame gave.
pub struct Ran {
    /// The program's return value (`enum xdp_action`).
    pub verdict: u32,
    /// The frame as the program left it.
    pub out: Vec<u8>,
    /// The run's duration as the kernel reports it.
    pub duration: Duration,
}

/// Runs `program` once on `frame` (no `ctx_in`: ingress is the loopback); `what` names the
/// run if the kernel refuses it.
pub fn run_once(ebpf: &Ebpf, program: &str, what: &str, frame: &[u8]) -> Ran {
    let program: &Xdp = ebpf
        .program(program)
        .unwrap_or_else(|| panic!("no program {program}"))
        .try_into()
        .expect("an XDP program");
    // Room for the outer header an encapsulation adds.
    let mut out = vec![0u8; frame.len() + 256];
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat: 1,
            ..TestRunOptions::default()
        })
        .unwrap_or_else(|err| panic!("{what}: BPF_PROG_TEST_RUN failed: {err:?}"));
    out.truncate(result.data_size_out as usize);
    Ran {
        verdict: result.return_value,
        out,
        duration: result.duration,
    }
}

/// The `count` counters of the per-CPU map `name`, each summed over CPUs.
pub fn counters(ebpf: &Ebpf, name: &str, count: u32) -> Vec<Counter> {
    let map: PerCpuArray<_, Counter> =
        PerCpuArray::try_from(ebpf.map(name).unwrap_or_else(|| panic!("no map {name}")))
            .expect("a per-CPU array");
    (0..count)
        .map(|index| {
            let mut total = Counter::default();
            for value in map.get(&index, 0).expect("reading a counter").iter() {
                total.add(value);
            }
            total
        })
        .collect()
}

/// The `FlowEvent` counters (`FLOW_STATS`), each summed over CPUs.
pub fn flow_events(ebpf: &Ebpf) -> Vec<u64> {
    let map: PerCpuArray<_, u64> =
        PerCpuArray::try_from(ebpf.map(MAP_FLOW_STATS).expect("FLOW_STATS"))
            .expect("a per-CPU array");
    (0..FlowEvent::COUNT)
        .map(|event| map.get(&event, 0).expect("reading FLOW_STATS").iter().sum())
        .collect()
}
