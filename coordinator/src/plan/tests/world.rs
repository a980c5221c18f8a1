//! A tiny model of the world that applies each action as the runtime and the sidecars would,
//! so that a sequence of plans is checked end to end.

use super::*;

/// A tiny model of the world: applies each action the way the runtime and sidecars
/// would, one step at a time, so that a sequence of plans can be checked end to end.
struct World {
    s: Situation,
    log: Vec<Action>,
}

impl World {
    fn new(size: u32, version: &str) -> Self {
        Self {
            s: Situation::empty(size).spec_version(version),
            log: Vec::new(),
        }
    }

    fn ordinal(text: &str) -> u32 {
        member_ordinal(CLUSTER, text).unwrap()
    }

    fn leader(&self) -> Option<u32> {
        self.s
            .0
            .members
            .iter()
            .find(|m| m.report.as_ref().is_some_and(|r| r.leader))
            .map(|m| m.ordinal)
    }

    /// Moves leadership off `ordinal` if it leads, as the sidecar does before it goes.
    fn move_leader_off(&mut self, ordinal: u32) {
        if self.leader() == Some(ordinal)
            && let Some(other) = self
                .s
                .0
                .members
                .iter()
                .map(|m| m.ordinal)
                .find(|&o| o != ordinal)
        {
            self.s = self.s.clone().leader(other);
        }
    }

    /// Plans and applies until steady; returns the actions taken.
    fn settle(&mut self) -> Vec<Action> {
        let mut taken = Vec::new();
        for _ in 0..100 {
            let plan = self.s.plan();
            taken.push(plan.action.clone());
            self.log.push(plan.action.clone());
            match plan.action {
                Action::Steady => return taken,
                Action::CreateSeed { name, version } => {
                    let ordinal = Self::ordinal(&name);
                    self.s = self
                        .s
                        .clone()
                        .voter(ordinal)
                        .runs(ordinal, &version.to_string());
                    self.s = self.s.clone().leader(ordinal);
                }
                Action::CreateInitial { names, version } => {
                    for name in &names {
                        let ordinal = Self::ordinal(name);
                        self.s = self
                            .s
                            .clone()
                            .voter(ordinal)
                            .runs(ordinal, &version.to_string());
                    }
                    self.s = self.s.clone().leader(Self::ordinal(&names[0]));
                    let now = self.s.0.now;
                    self.s.0.bootstrap = Some(BootstrapUnderWay {
                        names,
                        began: Some(now),
                    });
                }
                Action::EndBootstrap => {
                    assert!(self.s.0.bootstrap.is_some(), "no bootstrap to end");
                    self.s.0.bootstrap = None;
                }
                Action::CreateMember { name, version } => {
                    let ordinal = Self::ordinal(&name);
                    self.s = self.s.clone().joiner(ordinal);
                    self.s.member(ordinal).version = version;
                }
                Action::Wait {
                    reason: WaitReason::MemberJoining(name),
                } => {
                    let ordinal = Self::ordinal(&name);
                    let list = self.s.0.etcd_members.get_or_insert_with(Vec::new);
                    let promoted = match list.iter_mut().find(|e| e.id == id(ordinal)) {
                        Some(entry) => {
                            entry.is_learner = false;
                            true
                        }
                        None => false,
                    };
                    if !promoted {
                        self.s.add_entry(ordinal, true, true);
                    }
                    let version = self.s.member(ordinal).version.to_string();
                    let report = self
                        .s
                        .member(ordinal)
                        .report
                        .insert(Situation::healthy_report(ordinal, !promoted));
                    report.etcd_version = version;
                }
                Action::AskToLeave { name } => {
                    let ordinal = Self::ordinal(&name);
                    self.move_leader_off(ordinal);
                    self.s = self.s.clone().removed(ordinal);
                }
                Action::DeleteRuntimeMember { name, .. } => {
                    let ordinal = Self::ordinal(&name);
                    self.s = self.s.clone().orphan(ordinal);
                }
                Action::RemoveDeadMember { member_id, .. } => {
                    let ordinal = u32::try_from(member_id - 0x1000).unwrap();
                    self.s = self.s.clone().retired(ordinal);
                }
                Action::UpgradeMember { name, to } => {
                    let ordinal = Self::ordinal(&name);
                    let others_behind = self
                        .s
                        .0
                        .members
                        .iter()
                        .any(|m| m.ordinal != ordinal && running_version(m) != to);
                    assert!(
                        !(self.leader() == Some(ordinal) && others_behind),
                        "the leader was upgraded before its followers: {:?}",
                        self.log
                    );
                    self.move_leader_off(ordinal);
                    self.s = self.s.clone().runs(ordinal, &to.to_string());
                }
                other => panic!("unexpected {other:?} after {:?}", self.log),
            }
        }
        panic!("no steady state after 100 steps: {:?}", self.log);
    }

    fn voter_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .s
            .0
            .etcd_members
            .iter()
            .flatten()
            .filter(|e| !e.is_learner)
            .map(|e| e.name.clone())
            .collect();
        names.sort();
        names
    }
}

#[test]
fn a_cluster_lives_through_create_scale_upgrade_loss_and_shrink() {
    let mut world = World::new(3, "3.5.34");
    let created = world.settle();
    assert_eq!(
        created,
        [
            Action::CreateInitial {
                names: (0..3).map(name).collect(),
                version: "3.5.34".parse().unwrap(),
            },
            Action::EndBootstrap,
            Action::Steady,
        ],
        "the initial members are created together and the bootstrap ends"
    );
    assert_eq!(world.voter_names(), vec![name(0), name(1), name(2)]);

    world.s = world.s.clone().size(5);
    world.settle();
    assert_eq!(world.voter_names(), (0..5).map(name).collect::<Vec<_>>());

    world.s = world.s.clone().spec_version("3.6.15");
    let upgraded = world.settle();
    let upgrades: Vec<&Action> = upgraded
        .iter()
        .filter(|a| matches!(a, Action::UpgradeMember { .. }))
        .collect();
    assert_eq!(upgrades.len(), 5, "{upgraded:?}");
    assert_eq!(cluster_version(&world.s.0), Some(V36));

    world.s = world.s.clone().dead(2);
    let recovered = world.settle();
    assert_eq!(
        recovered.first(),
        Some(&Action::RemoveDeadMember {
            name: name(2),
            member_id: id(2),
            reason: "not running for 60s (dead after 15s)".into(),
        })
    );
    assert_eq!(
        world.voter_names(),
        vec![name(0), name(1), name(3), name(4), name(5)]
    );

    world.s = world.s.clone().size(3);
    world.settle();
    assert_eq!(world.voter_names().len(), 3);
    assert!(world.voter_names().contains(&name(world.leader().unwrap())));
}
