//! What `xdp_grace` and `xdp_l4_completeness` share: the edge program (`balancer_lb`) loaded
//! from the built object for `BPF_PROG_TEST_RUN`
//! tests that drive it with the real userspace map writer (`balancer::dataplane::Control`).

use aya::{Ebpf, EbpfLoader, maps::Array, programs::Xdp};
use balancer::dataplane::{ControlMaps, EBPF_OBJECT};
use balancer_common::{
    Action, FlowHashKey, GLOBAL_FLOW_SETS, GLOBAL_TABLE_SIZE, MAP_ACL_V4, MAP_ACL_V6,
    MAP_BACKEND_STATS, MAP_BACKENDS, MAP_FLOW_HASH_KEY, MAP_FLOWS, MAP_GRACE, MAP_MAGLEV,
    MAP_TX_PORTS, MAP_VIP_STATS, MAP_VIPS, PROGRAM_LB, flow_sets,
};

/// The map sizes a test's `[xdp]` config asks for (the loader must size the maps alike).
#[derive(Clone, Copy)]
pub struct LbSizes {
    pub max_vips: u32,
    pub per_vip: u32,
    pub table_size: u32,
    pub max_connections: u32,
}

/// Loads `balancer_lb` with maps of `sizes` and a random flow-hash key (root needed), and
/// takes out the maps `Control` writes. The program is loaded, not attached.
pub fn load(sizes: LbSizes) -> (Ebpf, ControlMaps) {
    let LbSizes {
        max_vips,
        per_vip,
        table_size,
        max_connections,
    } = sizes;
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(MAP_VIPS, max_vips)
        .map_max_entries(MAP_VIP_STATS, max_vips * Action::COUNT)
        .map_max_entries(MAP_BACKENDS, max_vips * per_vip)
        .map_max_entries(MAP_BACKEND_STATS, max_vips * per_vip)
        .map_max_entries(MAP_MAGLEV, max_vips * 2 * table_size)
        .map_max_entries(MAP_FLOWS, flow_sets(max_connections))
        .map_max_entries(MAP_GRACE, max_vips)
        .override_global(GLOBAL_FLOW_SETS, &flow_sets(max_connections), true)
        .override_global(GLOBAL_TABLE_SIZE, &table_size, true)
        .load(EBPF_OBJECT)
        .unwrap_or_else(|err| panic!("loading the eBPF object (root needed): {err:?}"));
    {
        let mut key: Array<_, FlowHashKey> =
            Array::try_from(ebpf.map_mut(MAP_FLOW_HASH_KEY).expect("FLOW_HASH_KEY"))
                .expect("an array");
        key.set(0, FlowHashKey::random(), 0)
            .expect("writing the flow hash key");
    }
    let program: &mut Xdp = ebpf
        .program_mut(PROGRAM_LB)
        .expect("balancer_lb")
        .try_into()
        .expect("an XDP program");
    program
        .load()
        .unwrap_or_else(|err| panic!("loading {PROGRAM_LB} (verifier?): {err:?}"));
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
