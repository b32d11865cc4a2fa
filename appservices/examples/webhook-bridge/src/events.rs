//! What the bridge does with the events the homeserver pushes: the bot joins rooms it is
//! invited to (that makes them bridged), ghost memberships are noted, and messages from
//! real users in bridged rooms are queued for `outbound_url`.

use ruma::events::{
    AnyMessageLikeEvent, AnyStateEvent, AnyTimelineEvent, MessageLikeEvent, StateEvent,
    room::{
        member::{MembershipState, OriginalRoomMemberEvent},
        message::OriginalRoomMessageEvent,
    },
};

use crate::{bridge::Bridge, common::appservice_api::EventHandler, outbound::OutboundMessage};

impl EventHandler for Bridge {
    async fn handle_event(&self, event: AnyTimelineEvent) {
        match event {
            AnyTimelineEvent::State(AnyStateEvent::RoomMember(StateEvent::Original(member))) => {
                self.on_member_event(&member).await;
            }
            AnyTimelineEvent::MessageLike(AnyMessageLikeEvent::RoomMessage(MessageLikeEvent::Original(message))) => {
                self.on_message(&message);
            }
            _ => {}
        }
    }
}

impl Bridge {
    async fn on_member_event(&self, member: &OriginalRoomMemberEvent) {
        let (room_id, user) = (&member.room_id, &member.state_key);
        let membership = &member.content.membership;
        if *user == self.homeserver.bot {
            match membership {
                MembershipState::Invite => match self.homeserver.join(room_id.as_str(), None).await {
                    Ok(_) => {
                        tracing::info!(%room_id, inviter = %member.sender, "joined on invite; room bridged");
                        self.set_bridged(room_id, true);
                    }
                    Err(error) => tracing::warn!(%room_id, %error, "cannot join the room invited to"),
                },
                MembershipState::Join => self.set_bridged(room_id, true),
                MembershipState::Leave | MembershipState::Ban => {
                    tracing::info!(%room_id, "the bot left; room no longer bridged");
                    self.set_bridged(room_id, false);
                }
                _ => {}
            }
        } else if self.is_ghost(user) {
            // An invite is not a join, and must not undo one the webhook just made.
            match membership {
                MembershipState::Join => self.set_ghost_joined(room_id, user, true),
                MembershipState::Leave | MembershipState::Ban => self.set_ghost_joined(room_id, user, false),
                _ => {}
            }
        }
    }

    /// Messages of real users (neither the bot nor a ghost: those came from the webhook)
    /// in bridged rooms go out.
    fn on_message(&self, message: &OriginalRoomMessageEvent) {
        let sender = &message.sender;
        if !self.is_bridged(&message.room_id) || *sender == self.homeserver.bot || self.is_ghost(sender) {
            return;
        }
        self.forward(OutboundMessage {
            room_id: message.room_id.clone(),
            sender: sender.clone(),
            body: message.content.body().to_owned(),
            event_id: message.event_id.clone(),
            origin_server_ts: u64::from(message.origin_server_ts.get()),
        });
    }
}
