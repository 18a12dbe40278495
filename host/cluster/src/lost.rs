//! Tasks that ran out of deliveries: JetStream announces each with a
//! max-deliveries advisory; whoever hears it first stores the task's
//! `worker_lost` result and removes it from the stream. Clients and hosts
//! both listen; the result bucket's create-if-absent makes it happen once.

use asyncer::ErrorKind;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::connect::Connection;
use crate::wire::{
    result_key, tenant_of_subject, uid_of_subject, RemoteFailure, RemoteResult, TASK_STREAM,
};

/// The advisory's fields that matter here.
#[derive(serde::Deserialize)]
struct MaxDeliveries {
    stream_seq: u64,
    deliveries: u64,
}

/// Listens for max-deliveries advisories until `stop` is cancelled.
pub(crate) async fn watch_lost_tasks(connection: Connection, stop: CancellationToken) {
    // Every queue's consumer.
    let subject = format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{TASK_STREAM}.*");
    let Ok(mut advisories) = connection.client.subscribe(subject).await else {
        tracing::warn!("cannot listen for lost tasks");
        return;
    };
    loop {
        let advisory = tokio::select! {
            () = stop.cancelled() => return,
            advisory = advisories.next() => match advisory {
                Some(advisory) => advisory,
                None => return,
            },
        };
        let Ok(advisory) = serde_json::from_slice::<MaxDeliveries>(&advisory.payload) else {
            continue;
        };
        if let Err(e) = mark_lost(&connection, &advisory).await {
            tracing::warn!(seq = advisory.stream_seq, "cannot mark a lost task: {e}");
        }
    }
}

async fn mark_lost(
    connection: &Connection,
    advisory: &MaxDeliveries,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let message = match connection.stream.get_raw_message(advisory.stream_seq).await {
        Ok(message) => message,
        // Already removed by another listener.
        Err(_) => return Ok(()),
    };
    let subject = message.subject.as_str();
    let (Some(tenant), Some(uid)) = (tenant_of_subject(subject), uid_of_subject(subject)) else {
        return Ok(());
    };
    let mut failure = RemoteFailure::new(
        ErrorKind::WorkerLost,
        format!("{} deliveries", advisory.deliveries),
    );
    failure.attempts = Some(advisory.deliveries);
    let lost = RemoteResult::failed(failure, advisory.deliveries as u32);
    let bytes = postcard::to_allocvec(&lost)?;
    // Create-if-absent: a result stored meanwhile wins.
    let _ = connection
        .results
        .create(result_key(tenant, &uid), bytes.into())
        .await;
    tracing::warn!(uid = %uid, deliveries = advisory.deliveries, "task lost: no host finished it");
    let _ = connection.stream.delete_message(advisory.stream_seq).await;
    Ok(())
}
