use super::*;
use blueprint_core::EventSink;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn key(keys: &Keys, connection: &str) -> Key {
    let uri: Uri = "https://api.example.com/contacts"
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    keys.key(&uri, None, ConnectionId::new(connection))
}

fn state(now: Instant) -> KeyState {
    KeyState::new(&key(&Keys::new(16), "c"), now)
}

/// What an answer says: `remaining` left until `reset`, limit 10.
fn seen(remaining: u64, reset: Instant) -> Observation {
    Observation {
        limit: Some(10),
        remaining: Some(remaining),
        reset: Reset::At {
            instant: reset,
            precision: Duration::from_millis(50),
        },
        retry_after: None,
        ..Observation::default()
    }
}

fn go(state: &KeyState, now: Instant) -> Admission {
    state.admit(now, None, false, None, &EventSink::none())
}

fn hold(until: Instant, why: Hold) -> Admission {
    Admission::Hold {
        until: Some(until),
        why,
    }
}

#[tokio::test(start_paused = true)]
async fn a_key_without_a_window_always_goes() {
    let now = Instant::now();
    let state = state(now);
    for _ in 0..100 {
        assert_eq!(go(&state, now), Admission::Go);
    }
    // Counts without a reset do not hold anything either.
    let no_reset = Observation {
        remaining: Some(0),
        ..Observation::default()
    };
    state.settle(true, Some((&no_reset, false)), now);
    assert_eq!(go(&state, now), Admission::Go);
}

#[tokio::test(start_paused = true)]
async fn requests_in_flight_count_against_what_is_left() {
    let now = Instant::now();
    let reset = now + secs(10);
    let state = state(now);
    state.settle(false, Some((&seen(2, reset), false)), now);
    assert_eq!(go(&state, now), Admission::Go);
    assert_eq!(go(&state, now), Admission::Go);
    // Two in flight, two left: the answers will tell whether the budget is spent.
    assert_eq!(go(&state, now), hold(reset, Hold::Answers));
    // The first answer: one left after it, one still in flight.
    state.settle(true, Some((&seen(1, reset), false)), now);
    assert_eq!(go(&state, now), hold(reset, Hold::Answers));
    // The second: none left; now the budget is known to be spent until the reset.
    state.settle(true, Some((&seen(0, reset), false)), now);
    assert_eq!(go(&state, now), hold(reset, Hold::Spent));
}

#[tokio::test(start_paused = true)]
async fn a_deadline_before_the_reset_is_refused_one_after_is_held() {
    let now = Instant::now();
    let reset = now + secs(10);
    let state = state(now);
    state.settle(false, Some((&seen(0, reset), false)), now);
    assert_eq!(
        state.admit(now, Some(now + secs(9)), false, None, &EventSink::none()),
        Admission::Refuse { retry_at: reset }
    );
    assert_eq!(
        state.admit(now, Some(now + secs(10)), false, None, &EventSink::none()),
        hold(reset, Hold::Spent)
    );
}

#[tokio::test(start_paused = true)]
async fn the_window_refills_at_its_reset_and_late_answers_do_not_spend_it() {
    let now = Instant::now();
    let reset = now + secs(10);
    let state = state(now);
    state.settle(false, Some((&seen(0, reset), false)), now);
    assert_eq!(go(&state, now), hold(reset, Hold::Spent));

    let later = reset + Duration::from_millis(1);
    assert_eq!(go(&state, later), Admission::Go);
    // A late answer from the old window (reset now in the past, or the same instant) is
    // not the new window's.
    let late = Observation {
        reset: Reset::Past {
            instant: Some(reset),
            precision: Duration::from_millis(50),
        },
        ..seen(0, reset)
    };
    state.settle(true, Some((&late, false)), later);
    state.settle(false, Some((&seen(0, reset), false)), later);
    assert_eq!(go(&state, later), Admission::Go);
    // The first answer of the new window opens it.
    state.settle(true, Some((&seen(0, reset + secs(10)), false)), later);
    state.settle(true, None, later);
    assert_eq!(go(&state, later), hold(reset + secs(10), Hold::Spent));
}

#[tokio::test(start_paused = true)]
async fn a_server_that_turns_its_window_after_the_reset_it_wrote_is_learned() {
    let now = Instant::now();
    let reset = now + secs(10);
    let ms = Duration::from_millis;
    let state = state(now);
    state.settle(false, Some((&seen(0, reset), false)), now);
    // At the written reset, requests go, and come back 429: the old window is still on.
    let t = reset;
    assert_eq!(go(&state, t), Admission::Go);
    let stale = Observation {
        reset: Reset::Past {
            instant: Some(reset),
            precision: ms(50),
        },
        ..seen(0, reset)
    };
    state.settle(true, Some((&stale, true)), t + ms(10));
    assert_eq!(go(&state, t + ms(10)), hold(t + ms(110), Hold::Spent));
    // Then one request at a time probes for the new window.
    assert_eq!(go(&state, t + ms(110)), Admission::Go);
    assert_eq!(
        go(&state, t + ms(110)),
        Admission::Hold {
            until: None,
            why: Hold::Answers
        }
    );
    // The new window answers 150 ms after the written reset: from now on, every written
    // reset is waited for 150 ms longer.
    state.settle(true, Some((&seen(0, reset + secs(10)), false)), t + ms(150));
    assert_eq!(
        go(&state, t + ms(150)),
        hold(reset + secs(10) + ms(150), Hold::Spent)
    );
    // And the window after that.
    let t = reset + secs(10) + ms(200);
    assert_eq!(go(&state, t), Admission::Go);
    state.settle(true, Some((&seen(0, reset + secs(20)), false)), t);
    assert_eq!(go(&state, t), hold(reset + secs(20) + ms(150), Hold::Spent));
}

#[tokio::test(start_paused = true)]
async fn after_a_reset_no_more_than_the_limit_goes_before_an_answer() {
    let now = Instant::now();
    let reset = now + secs(1);
    let state = state(now);
    state.settle(false, Some((&seen(0, reset), false)), now);
    for _ in 0..10 {
        assert_eq!(go(&state, reset), Admission::Go);
    }
    assert_eq!(
        go(&state, reset),
        Admission::Hold {
            until: None,
            why: Hold::Answers
        }
    );
}

#[tokio::test(start_paused = true)]
async fn answers_out_of_order_only_lower_what_is_left() {
    let now = Instant::now();
    let reset = now + secs(10);
    let state = state(now);
    state.settle(false, Some((&seen(3, reset), false)), now);
    state.settle(false, Some((&seen(5, reset), false)), now);
    for _ in 0..3 {
        assert_eq!(go(&state, now), Admission::Go);
    }
    assert_eq!(go(&state, now), hold(reset, Hold::Answers));
}

#[tokio::test(start_paused = true)]
async fn a_429_holds_until_retry_after_or_reset_and_never_invents_a_wait() {
    let now = Instant::now();
    let reset = now + secs(10);

    let with_retry_after = state(now);
    let told = Observation {
        retry_after: Some(now + secs(3)),
        ..Observation::default()
    };
    with_retry_after.settle(false, Some((&told, true)), now);
    assert_eq!(go(&with_retry_after, now), hold(now + secs(3), Hold::Spent));
    assert_eq!(go(&with_retry_after, now + secs(3)), Admission::Go);

    let with_reset = state(now);
    with_reset.settle(false, Some((&seen(0, reset), true)), now);
    assert_eq!(go(&with_reset, now), hold(reset, Hold::Spent));

    // Intercom's cap on pending jobs: a 429 with budget left, or with nothing at all.
    let cap = state(now);
    cap.settle(false, Some((&seen(4, reset), true)), now);
    assert_eq!(go(&cap, now), Admission::Go);
    let bare = state(now);
    bare.settle(false, Some((&Observation::default(), true)), now);
    assert_eq!(go(&bare, now), Admission::Go);
}

#[tokio::test(start_paused = true)]
async fn smoothing_spaces_a_small_budget_to_the_reset() {
    let now = Instant::now();
    let state = state(now);
    // A 10 s window opened with all of its 10 requests left: not small, no spacing.
    state.settle(false, Some((&seen(10, now + secs(10)), false)), now);
    assert_eq!(
        state.admit(now, None, true, None, &EventSink::none()),
        Admission::Go
    );
    state.settle(true, None, now);

    // Later, 2 left for 8 s of a 10 s window of 10: spaced 4 s apart.
    let t = now + secs(2);
    state.settle(false, Some((&seen(2, now + secs(10)), false)), t);
    assert_eq!(
        state.admit(t, None, true, None, &EventSink::none()),
        Admission::Go
    );
    assert_eq!(
        state.admit(t, None, true, None, &EventSink::none()),
        hold(t + secs(4), Hold::Smoothing)
    );
    // A deadline that cannot wait for its turn goes now.
    assert_eq!(
        state.admit(t, Some(t + secs(1)), true, None, &EventSink::none()),
        Admission::Go
    );
    // Without smoothing, it would all go at once.
    let plain = self::state(now);
    plain.settle(false, Some((&seen(10, now + secs(10)), false)), now);
    plain.settle(false, Some((&seen(2, now + secs(10)), false)), t);
    assert_eq!(go(&plain, t), Admission::Go);
    assert_eq!(go(&plain, t), Admission::Go);
}

#[tokio::test(start_paused = true)]
async fn waiters_for_answers_are_woken_by_an_answer() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let count = Arc::new(Count(AtomicUsize::new(0)));
    let waker = Waker::from(Arc::clone(&count));

    let now = Instant::now();
    let reset = now + secs(10);
    let state = state(now);
    state.settle(false, Some((&seen(1, reset), false)), now);
    assert_eq!(go(&state, now), Admission::Go);
    let held = state.admit(now, None, false, Some(&waker), &EventSink::none());
    assert_eq!(held, hold(reset, Hold::Answers));
    // Registered once, however often it asks.
    let _ = state.admit(now, None, false, Some(&waker), &EventSink::none());
    state.settle(true, Some((&seen(1, reset), false)), now);
    assert_eq!(count.0.load(Ordering::SeqCst), 1);
    // That answer was already counted: one is left.
    assert_eq!(go(&state, now), Admission::Go);
}

#[tokio::test(start_paused = true)]
async fn keys_are_bounded_and_busy_keys_outlive_idle_ones() {
    let now = Instant::now();
    let keys = Keys::new(160);
    assert_eq!(keys.capacity(), 160);
    // A key with an open window, made first, then a thousand idle ones.
    let busy = key(&keys, "busy");
    let state = keys.get_or_insert(&busy, now);
    if let Some(state) = &state {
        state.settle(false, Some((&seen(0, now + secs(60)), false)), now);
    }
    for i in 0..1000 {
        let k = key(&keys, &format!("idle-{i}"));
        assert!(keys.get_or_insert(&k, now + secs(1)).is_some());
        assert!(keys.len() <= keys.capacity());
    }
    assert!(
        keys.get(&busy).is_some(),
        "a key with an open window was evicted"
    );
    assert!(keys.get(&key(&keys, "idle-999")).is_some());
    assert!(keys.get(&key(&keys, "idle-0")).is_none());
}

#[test]
fn keys_tell_origins_and_connections_apart_and_relative_uris_take_the_default() {
    let keys = Keys::new(16);
    let uri = |s: &str| -> Uri { s.parse().unwrap_or_else(|e| panic!("{e}")) };
    let default = Origin::parse("https://api.example.com").ok();
    let a = keys.key(
        &uri("https://API.example.com:443/x"),
        None,
        ConnectionId::new("a"),
    );
    let relative = keys.key(&uri("/contacts"), default.as_ref(), ConnectionId::new("a"));
    let other_conn = keys.key(
        &uri("https://api.example.com/x"),
        None,
        ConnectionId::new("b"),
    );
    let other_origin = keys.key(
        &uri("https://eu.example.com/x"),
        None,
        ConnectionId::new("a"),
    );
    let unknown = keys.key(&uri("/contacts"), None, ConnectionId::new("a"));
    assert_eq!(a.hash, relative.hash);
    assert_eq!(a.origin, relative.origin);
    for other in [&other_conn, &other_origin, &unknown] {
        assert_ne!(a.hash, other.hash, "{other:?}");
    }
    assert_eq!(unknown.origin, None);
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Step {
        Answer {
            counted: bool,
            limit: Option<u64>,
            remaining: Option<u64>,
            reset: Option<Option<u64>>,
            retry_after: Option<u64>,
            limited: bool,
        },
        Admit {
            deadline: Option<u64>,
            smoothing: bool,
        },
        Wait(u64),
    }

    fn count() -> impl Strategy<Value = Option<u64>> {
        prop_oneof![
            Just(None),
            Just(Some(0)),
            Just(Some(u64::MAX)),
            (0u64..100).prop_map(Some)
        ]
    }

    fn millis() -> impl Strategy<Value = u64> {
        prop_oneof![Just(0u64), 0u64..5_000, Just(u64::MAX / 4)]
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (
                any::<bool>(),
                count(),
                count(),
                proptest::option::of(proptest::option::of(millis())),
                proptest::option::of(millis()),
                any::<bool>()
            )
                .prop_map(
                    |(counted, limit, remaining, reset, retry_after, limited)| {
                        Step::Answer {
                            counted,
                            limit,
                            remaining,
                            reset,
                            retry_after,
                            limited,
                        }
                    }
                ),
            (proptest::option::of(millis()), any::<bool>()).prop_map(|(deadline, smoothing)| {
                Step::Admit {
                    deadline,
                    smoothing,
                }
            }),
            (0u64..3_000).prop_map(Step::Wait),
        ]
    }

    fn after(now: Instant, ms: u64) -> Instant {
        now.checked_add(Duration::from_millis(ms)).unwrap_or(now)
    }

    proptest! {
        /// Whatever servers say and however requests come, the state never panics, and a
        /// hold always ends in the future.
        #[test]
        fn any_sequence_keeps_the_budget_sane(steps in proptest::collection::vec(step(), 1..60)) {
            let mut now = Instant::now();
            let state = state(now);
            for step in steps {
                match step {
                    Step::Answer { counted, limit, remaining, reset, retry_after, limited } => {
                        let seen = Observation {
                            limit,
                            remaining,
                            reset: match reset {
                                None => Reset::Absent,
                                Some(None) => Reset::Past {
                                    instant: Some(now),
                                    precision: Duration::from_millis(1050),
                                },
                                Some(Some(ms)) => Reset::At {
                                    instant: after(now, ms.max(1)),
                                    precision: Duration::from_millis(1050),
                                },
                            },
                            retry_after: retry_after.map(|ms| after(now, ms)),
                            ..Observation::default()
                        };
                        state.settle(counted, Some((&seen, limited)), now);
                    }
                    Step::Admit { deadline, smoothing } => {
                        let deadline = deadline.map(|ms| after(now, ms));
                        match state.admit(now, deadline, smoothing, None, &EventSink::none()) {
                            Admission::Go | Admission::Hold { until: None, .. } => {}
                            Admission::Hold { until: Some(until), .. } => prop_assert!(until > now),
                            Admission::Refuse { retry_at } => {
                                prop_assert!(deadline.is_some());
                                prop_assert!(retry_at >= now);
                            }
                        }
                    }
                    Step::Wait(ms) => now = after(now, ms),
                }
            }
        }
    }
}
