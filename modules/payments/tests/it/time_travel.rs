//! Full history and time travel: a payment as it stood at a version or an instant.

use payments_api::{PaymentStatus, PaymentsApi, PaymentsError, PointInTime};
use time::Duration;
use uuid::Uuid;

use crate::support::Env;

shared_kernel::both_backends! {
    async fn payments_read_at_a_version_or_instant(kind: crate::support::Kind) {
        let env = Env::new(kind, "payments_read_at_a_version_or_instant").await;
        let (customer, order) = (env.customer(), Uuid::now_v7());
        env.place(order, customer, 250).await;
        env.confirm(order).await;
        env.cancel(order).await;
        let id = env.payment_of(order).await.id;

        let history = env.payments.payment_events(id).await.unwrap();
        let kinds: Vec<(i64, &str)> = history.iter().map(|e| (e.version, e.event_type.as_str())).collect();
        assert_eq!(kinds, [(1, "PaymentAuthorized"), (2, "PaymentCaptured"), (3, "PaymentRefunded")]);
        assert_eq!(history[0].data["amount_cents"], 250);
        assert_eq!(history[0].data["order_id"], order.to_string());
        assert!(history.windows(2).all(|w| w[0].occurred_at <= w[1].occurred_at));

        let at = |point| env.payments.payment(id, point);
        let expected = [PaymentStatus::Authorized, PaymentStatus::Captured, PaymentStatus::Refunded];
        for (version, status) in (1..).zip(expected) {
            let payment = at(PointInTime::Version(version)).await.unwrap();
            assert_eq!((payment.status, payment.version), (status, version));
            assert_eq!(payment.updated_at, history[version as usize - 1].occurred_at);
            assert_eq!(payment.created_at, history[0].occurred_at);
            let payment = at(PointInTime::AsOf(history[version as usize - 1].occurred_at)).await.unwrap();
            assert_eq!((payment.status, payment.version), (status, version));
        }
        let latest = at(PointInTime::Latest).await.unwrap();
        assert_eq!((latest.status, latest.version), (PaymentStatus::Refunded, 3));
        let future = history[2].occurred_at + Duration::days(365);
        assert_eq!(at(PointInTime::AsOf(future)).await.unwrap(), latest);

        assert!(matches!(at(PointInTime::Version(4)).await, Err(PaymentsError::NotYet(_))));
        assert!(matches!(at(PointInTime::Version(0)).await, Err(PaymentsError::Invalid(_))));
        let before = history[0].occurred_at - Duration::microseconds(1);
        assert!(matches!(at(PointInTime::AsOf(before)).await, Err(PaymentsError::NotYet(_))));

        let unknown = payments_api::PaymentId::generate();
        assert!(matches!(env.payments.payment(unknown, PointInTime::Latest).await, Err(PaymentsError::PaymentNotFound(_))));
        assert!(matches!(env.payments.payment_events(unknown).await, Err(PaymentsError::PaymentNotFound(_))));
        // An account stream is not a payment, even when asked for by its id.
        assert!(matches!(env.payments.payment(payments_api::PaymentId(customer), PointInTime::Latest).await, Err(PaymentsError::PaymentNotFound(_))));
    }
}
