//! The doctor against the kernel: what it says must agree with what the
//! kernel does when this test tries the same thing itself, and what it
//! cannot check it must say, with the reason.

mod common;

use common::enter_new_netns;
use nfqueue_core::doctor::{self, Feature, Options, Status};
use nfqueue_core::{Error, Queue, QueueConfig, QueueFlags};
use nfqueue_testkit::{cmd, without_capabilities};

/// The doctor's findings of the queue, the two rule kinds and the conntrack
/// glue match what the kernel does here; on a kernel without
/// `CONFIG_NFT_QUEUE` or `CONFIG_NETFILTER_NETLINK_GLUE_CT` (as the
/// development machine's) it says they are missing, why, and what to do.
#[test]
fn the_doctor_agrees_with_the_kernel() {
    let _netns = enter_new_netns();
    let report = doctor::diagnose();
    let status = |feature| report.get(feature).map(|c| c.status);
    let check = |feature| report.get(feature).expect("every feature is checked");

    assert_eq!(
        status(Feature::NfnetlinkQueue),
        Some(Status::Ok),
        "{report}"
    );
    assert_eq!(
        status(Feature::IptablesTarget),
        Some(Status::Ok),
        "{report}"
    );

    // The conntrack glue: a bind with the CONNTRACK flag here.
    let mut queue = Queue::open().unwrap();
    match queue.bind(0, &QueueConfig::default().flags(QueueFlags::CONNTRACK)) {
        Ok(()) => assert_eq!(
            status(Feature::ConntrackPackets),
            Some(Status::Ok),
            "{report}"
        ),
        Err(err) => {
            assert_eq!(err.raw_os_error(), Some(libc::EOPNOTSUPP), "{err}");
            // The bind error and the doctor name the same cause.
            assert!(
                err.to_string().contains("CONFIG_NETFILTER_NETLINK_GLUE_CT"),
                "{err}"
            );
            for feature in [Feature::ConntrackPackets, Feature::ConntrackVerdicts] {
                let found = check(feature);
                assert_eq!(found.status, Status::Missing, "{report}");
                assert!(found.detail.contains("EOPNOTSUPP") || found.detail.contains("95"));
                let fix = found.fix.as_deref().unwrap();
                assert!(fix.contains("CONFIG_NETFILTER_NETLINK_GLUE_CT"), "{fix}");
                assert!(fix.contains("nf_conntrack_netlink"), "{fix}");
            }
        }
    }
    drop(queue);

    // nft's queue statement: the same rule here.
    cmd::run("nft", ["add table inet doctor_test"]);
    cmd::run(
        "nft",
        ["add chain inet doctor_test output { type filter hook output priority 0; }"],
    );
    let nft_queue = cmd::try_run(
        "nft",
        ["add rule inet doctor_test output udp dport 9 queue num 5 bypass"],
    );
    match nft_queue {
        Ok(_) => assert_eq!(status(Feature::NftQueue), Some(Status::Ok), "{report}"),
        Err(err) => {
            assert!(err.contains("No such file or directory"), "{err}");
            let found = check(Feature::NftQueue);
            assert_eq!(found.status, Status::Missing, "{report}");
            assert!(
                found.detail.contains("No such file or directory"),
                "{report}"
            );
            let fix = found.fix.as_deref().unwrap();
            assert!(fix.contains("CONFIG_NFT_QUEUE") && fix.contains("iptables -j NFQUEUE"));
        }
    }

    // Every check that is not ok says what to do, and the report says
    // what is missing at the end.
    for found in &report.checks {
        if found.status != Status::Ok {
            assert!(found.fix.is_some(), "{found:?}");
        }
    }
    let text = report.to_string();
    for found in report.missing() {
        assert!(
            text.contains(&format!("MISSING   {}", found.feature)),
            "{text}"
        );
    }
    // The payload probe gets an answer wherever user namespaces can be made
    // (not in a chroot, for one), and cannot otherwise.
    if status(Feature::UserNamespaces) == Some(Status::Ok) {
        assert_ne!(
            status(Feature::PayloadInUserNamespace),
            Some(Status::Unchecked),
            "{report}"
        );
    } else {
        assert_eq!(
            status(Feature::PayloadInUserNamespace),
            Some(Status::Unchecked),
            "{report}"
        );
    }
    // It agrees with the test kit's own probe where the tests themselves
    // run in a user namespace.
    if !nfqueue_testkit::userns::in_initial_user_namespace() {
        let arrives = nfqueue_testkit::userns::payload_verdict_arrives().unwrap();
        assert_eq!(
            status(Feature::PayloadInUserNamespace) == Some(Status::Ok),
            arrives,
            "{report}"
        );
    }
}

/// Without capabilities the doctor still runs: it says the caller lacks
/// CAP_NET_ADMIN, in the words of the bind error, and tries the kernel in a
/// new user namespace, or says why it could not.
#[test]
fn without_capabilities_the_doctor_says_what_it_cannot_do() {
    let report = without_capabilities(|| {
        doctor::diagnose_with(&Options::default().only([
            Feature::NetAdmin,
            Feature::NfnetlinkQueue,
            Feature::ReceiveBuffer,
        ]))
    });
    let net_admin = report.get(Feature::NetAdmin).unwrap();
    assert_eq!(net_admin.status, Status::Missing, "{report}");
    let bind_error = Error::PermissionDenied {
        op: "binding a queue",
    };
    assert_eq!(net_admin.fix.as_deref(), Some(&*bind_error.to_string()));
    let queue = report.get(Feature::NfnetlinkQueue).unwrap();
    match queue.status {
        Status::Ok => assert!(
            report.method.contains("user and network namespace"),
            "{report}"
        ),
        Status::Unchecked => assert!(queue.detail.contains("namespace"), "{report}"),
        other => panic!("{other:?}: {report}"),
    }
    assert_eq!(report.checks.len(), 3, "only what was asked: {report}");
}
