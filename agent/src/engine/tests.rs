//! The engine's deadline: a call that never answers is stopped when `[hook] deadline_ms`
//! passes (tokio's clock paused, so the test takes no time).

use super::*;
use crate::config::MeshSection;
use crate::engine::fake::{Fake, Fault, Op};

fn desired() -> Desired {
    Desired {
        vmid: "100".parse::<Vmid>().unwrap(),
        network_type: NetworkType::Bridge,
        require_mesh: false,
        nics: Vec::new(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_hung_call_is_stopped_at_the_deadline() {
    let fake = Fake::pve_started();
    // The post-stop sweep of an owned row: its del_port never answers.
    fake.add_row(crate::engine::fake::FakePort {
        name: "vi100".into(),
        bridge: "ovsbr0".into(),
        external_ids: [("owner", "op-agent"), ("vm-id", "100")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
        ..Default::default()
    });
    fake.fail(Op::DelPort, 1, Fault::Hang);
    let deadline = Deadline::from_now(Duration::from_millis(4000));
    let host = fake.host(Duration::from_secs(10), deadline);
    let mut rec = Recorder::new(100, "post-stop", None, Instant::now());
    let t = tokio::time::Instant::now();
    let d = desired();
    let r = within(deadline, &mut rec, async |rec: &mut Recorder| {
        let obs = observe::observe(&host, &d, true, rec).await?;
        let steps = plan::plan_post_stop(&d, &obs);
        assert_eq!(steps.len(), 1);
        execute::execute(&host, &MeshSection::default(), &d, &obs, &steps, rec).await
    })
    .await;
    assert_eq!(t.elapsed(), Duration::from_millis(4000));
    let e = r.unwrap_err();
    assert_eq!(e.code(), crate::exit::ExitCode::Timeout);
    assert_eq!(
        e.to_string(),
        "deadline of 4000 ms exceeded; the run was stopped"
    );
    let last = rec.rows().last().unwrap();
    assert_eq!(
        (last.0.as_str(), last.1),
        ("hook.deadline", Outcome::Failed)
    );
}
