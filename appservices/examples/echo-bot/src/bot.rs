//! The echo bot's behaviour: join rooms it is invited to, answer commands.

use ruma::{
    MilliSecondsSinceUnixEpoch,
    events::{
        AnyMessageLikeEvent, AnyStateEvent, AnyTimelineEvent, MessageLikeEvent, StateEvent,
        room::{
            member::{MembershipState, OriginalRoomMemberEvent},
            message::{MessageType, OriginalRoomMessageEvent, RoomMessageEventContent},
        },
    },
};

use crate::{
    commands,
    common::{appservice_api::EventHandler, homeserver::Homeserver},
};

pub struct EchoBot {
    pub homeserver: Homeserver,
}

impl EventHandler for EchoBot {
    async fn handle_event(&self, event: AnyTimelineEvent) {
        match event {
            AnyTimelineEvent::State(AnyStateEvent::RoomMember(StateEvent::Original(member))) => {
                self.on_member_event(&member).await;
            }
            AnyTimelineEvent::MessageLike(AnyMessageLikeEvent::RoomMessage(MessageLikeEvent::Original(message))) => {
                self.on_message(&message).await;
            }
            _ => {}
        }
    }
}

impl EchoBot {
    /// An invite for the bot: join (`POST /join/{roomId}` as the bot).
    async fn on_member_event(&self, member: &OriginalRoomMemberEvent) {
        if member.state_key != self.homeserver.bot || member.content.membership != MembershipState::Invite {
            return;
        }
        let room_id = &member.room_id;
        match self.homeserver.join(room_id.as_str(), None).await {
            Ok(_) => tracing::info!(%room_id, inviter = %member.sender, "joined on invite"),
            Err(error) => tracing::warn!(%room_id, %error, "cannot join the room invited to"),
        }
    }

    /// A text message holding a command: answer with an `m.notice` (which bots, this one
    /// included, do not answer: no two bots can talk to each other forever).
    async fn on_message(&self, message: &OriginalRoomMessageEvent) {
        if message.sender == self.homeserver.bot {
            return;
        }
        let MessageType::Text(text) = &message.content.msgtype else {
            return;
        };
        let Some(command) = commands::parse(&text.body) else {
            return;
        };
        let now = u64::from(MilliSecondsSinceUnixEpoch::now().get());
        let sent = u64::from(message.origin_server_ts.get());
        let answer = commands::answer(&command, now.saturating_sub(sent));
        let content = RoomMessageEventContent::notice_plain(answer);
        let room_id = &message.room_id;
        match self.homeserver.send_message(room_id, &content, None).await {
            Ok(event_id) => tracing::info!(%room_id, %event_id, command = command.name(), "answered"),
            Err(error) => tracing::warn!(%room_id, %error, "cannot answer"),
        }
    }
}
