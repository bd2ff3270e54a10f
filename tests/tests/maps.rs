//! The controller's map writes against a real kernel map: batched calls (`BPF_MAP_UPDATE_BATCH`,
//! `BPF_MAP_DELETE_BATCH`) and the one-call-per-element path that a kernel without batch calls gets
//! leave the same entries, and deleting keys that are absent is not an error on either path.

use aya::maps::HashMap;
use sentra_common::{
    exec::{InodeKey, RuleValue},
    names::map::EXEC_INODE_RULES,
};
use sentra_ctl::kernel::{BackendChoice, Kernel, batch};

/// A device number no file has: the test's entries cannot be mistaken for a policy's.
const DEV: u64 = 0xdead_beef;

fn key(ino: u64) -> InodeKey {
    InodeKey { generation: 1, pad: 0, dev: DEV, ino }
}

fn entries_of(kernel: &Kernel) -> Vec<(u64, RuleValue)> {
    let map = kernel.ebpf.map(EXEC_INODE_RULES).expect("EXEC_INODE_RULES");
    let map = HashMap::<_, InodeKey, RuleValue>::try_from(map).expect("a hash map");
    let mut found: Vec<(u64, RuleValue)> =
        map.iter().filter_map(Result::ok).filter(|(k, _)| k.dev == DEV).map(|(k, v)| (k.ino, v)).collect();
    found.sort_by_key(|(ino, _)| *ino);
    found
}

#[test]
fn batched_and_one_by_one_writes_leave_the_same_entries() {
    let backend = match sentra_tests::requested_backend().as_str() {
        "lsm" => BackendChoice::Lsm,
        "signal" => BackendChoice::Signal,
        _ => BackendChoice::Auto,
    };
    let mut kernel = Kernel::load(backend).expect("load BPF");
    let entries: Vec<(InodeKey, RuleValue)> =
        (1..=6000u32).map(|i| (key(u64::from(i)), RuleValue { rule: i, effect: i % 2 })).collect();
    let expected: Vec<(u64, RuleValue)> = entries.iter().map(|(k, v)| (k.ino, *v)).collect();

    // Half in batches (more than one chunk of 4096), half one element per call.
    batch::update(&mut kernel.ebpf, EXEC_INODE_RULES, &entries[..4500]).expect("batched update");
    batch::update_each(&mut kernel.ebpf, EXEC_INODE_RULES, &entries[4500..]).expect("one-by-one update");
    assert_eq!(entries_of(&kernel), expected);

    // Replacing values works on both paths too.
    let replaced: Vec<(InodeKey, RuleValue)> =
        entries.iter().map(|(k, v)| (*k, RuleValue { rule: v.rule + 1, effect: v.effect })).collect();
    batch::update(&mut kernel.ebpf, EXEC_INODE_RULES, &replaced[..100]).expect("batched replace");
    batch::update_each(&mut kernel.ebpf, EXEC_INODE_RULES, &replaced[100..200]).expect("one-by-one replace");
    let found = entries_of(&kernel);
    assert!(found[..200].iter().zip(&replaced[..200]).all(|(f, r)| f.1 == r.1));
    assert_eq!(found[200..], expected[200..]);

    // Deleting, with absent keys among the present ones: one by one, then in batches (an absent key
    // stops a batch; the rest is deleted one by one).
    let keys: Vec<InodeKey> = entries.iter().map(|(k, _)| *k).collect();
    let mut first: Vec<InodeKey> = keys[..1000].to_vec();
    first.insert(500, key(1_000_000));
    batch::delete_each(&kernel.ebpf, EXEC_INODE_RULES, &first).expect("one-by-one delete");
    assert_eq!(entries_of(&kernel).len(), 5000);
    let mut rest: Vec<InodeKey> = keys[1000..].to_vec();
    rest.insert(2000, key(1_000_001));
    rest.push(key(1));
    batch::delete(&mut kernel.ebpf, EXEC_INODE_RULES, &rest).expect("batched delete");
    assert_eq!(entries_of(&kernel), Vec::new(), "every key deleted");
}

/// The loaded object holds exactly the maps and programs `sentra_common::names` lists: a map or
/// program added on the BPF side without a shared name, or a name no item carries, fails here (the
/// BPF side's own build-time check covers each declared item, not what is missing from the list).
#[test]
fn the_object_holds_exactly_the_shared_names() {
    use std::collections::BTreeSet;

    use sentra_common::names;

    let kernel = Kernel::load(BackendChoice::Signal).expect("load BPF");
    let maps: BTreeSet<&str> =
        kernel.ebpf.maps().map(|(name, _)| name).filter(|name| !name.starts_with('.')).collect();
    assert_eq!(maps, names::map::ALL.into_iter().collect::<BTreeSet<_>>());
    let programs: BTreeSet<&str> = kernel.ebpf.programs().map(|(name, _)| name).collect();
    assert_eq!(programs, names::program::ALL.into_iter().collect::<BTreeSet<_>>());
}
