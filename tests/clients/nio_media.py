"""matrix-nio (a real Python Matrix client SDK) shares an image through Hearth's media repository.

Alice uploads a PNG and an encrypted attachment through nio and posts the image to a room; bob
sees the `m.image` event in his sync, downloads the image and its 32x32 thumbnail over the
authenticated media endpoints (`/_matrix/client/v1/media`), and decrypts the attachment.

    python tests/clients/nio_media.py target/debug/hearth

The media store is whatever the environment configures: local disk by default, or an S3 bucket
through HEARTH_MEDIA_S3_ENDPOINT, HEARTH_MEDIA_S3_BUCKET and AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY.
"""

import asyncio
import io
import struct
import sys
import zlib

import nio
from nio.crypto import decrypt_attachment

from harness import check, running_hearth


def png(width: int, height: int) -> bytes:
    """A gradient PNG, written by hand (no imaging library needed)."""
    rows = b"".join(
        b"\x00" + bytes(v for x in range(width) for v in (x % 256, y % 256, (x * y) % 256)) for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def png_size(data: bytes) -> tuple[int, int]:
    check(data[:8] == b"\x89PNG\r\n\x1a\n", "the thumbnail is a PNG")
    return struct.unpack(">II", data[16:24])


async def register(base: str, name: str) -> nio.AsyncClient:
    client = nio.AsyncClient(base, name)
    response = await client.register(name, f"{name} password", device_name=f"{name}'s nio")
    check(isinstance(response, nio.RegisterResponse), f"register {name}", response)
    return client


async def exercise(base: str) -> None:
    alice = await register(base, "alice")
    bob = await register(base, "bob")
    try:
        config = await alice.content_repository_config()
        check(isinstance(config, nio.ContentRepositoryConfigResponse), "media config", config)
        check(config.upload_size == 50 * 1024 * 1024, "upload limit advertised", config.upload_size)

        image = png(400, 300)
        uploaded, _ = await alice.upload(io.BytesIO(image), content_type="image/png", filename="gradient.png", filesize=len(image))
        check(isinstance(uploaded, nio.UploadResponse), "upload image", uploaded)
        mxc = uploaded.content_uri
        check(mxc.startswith("mxc://localhost/"), "content URI", mxc)

        secret = b"attachment bytes only the room can read " * 100
        encrypted, keys = await alice.upload(
            io.BytesIO(secret), content_type="application/octet-stream", filename="secret.bin", encrypt=True, filesize=len(secret)
        )
        check(isinstance(encrypted, nio.UploadResponse) and keys is not None, "upload encrypted attachment", encrypted)

        room = await alice.room_create(invite=["@bob:localhost"], name="pictures")
        check(isinstance(room, nio.RoomCreateResponse), "create room", room)
        joined = await bob.join(room.room_id)
        check(isinstance(joined, nio.JoinResponse), "bob joins", joined)
        sent = await alice.room_send(
            room.room_id,
            "m.room.message",
            {
                "msgtype": "m.image",
                "body": "gradient.png",
                "url": mxc,
                "info": {"mimetype": "image/png", "w": 400, "h": 300, "size": len(image)},
            },
        )
        check(isinstance(sent, nio.RoomSendResponse), "send m.image", sent)

        synced = await bob.sync(timeout=5000, full_state=True)
        check(isinstance(synced, nio.SyncResponse), "bob syncs", synced)
        events = synced.rooms.join[room.room_id].timeline.events
        images = [event for event in events if isinstance(event, nio.RoomMessageImage)]
        check(len(images) == 1 and images[0].url == mxc, "bob sees the image event", events)

        downloaded = await bob.download(mxc=images[0].url)
        check(isinstance(downloaded, nio.DownloadResponse), "bob downloads the image", downloaded)
        check(downloaded.body == image, "the download is byte-identical", len(downloaded.body))
        check(downloaded.content_type == "image/png", "content type kept", downloaded.content_type)
        check(downloaded.filename == "gradient.png", "file name kept", downloaded.filename)

        server_name, media_id = mxc[len("mxc://") :].split("/")
        thumbnail = await bob.thumbnail(server_name, media_id, 32, 32, nio.ResizingMethod.crop)
        check(isinstance(thumbnail, nio.ThumbnailResponse), "bob fetches a thumbnail", thumbnail)
        size = png_size(thumbnail.body)
        check(size == (32, 32), "32x32 crop thumbnail", size)
        scaled = await bob.thumbnail(server_name, media_id, 320, 240, nio.ResizingMethod.scale)
        check(isinstance(scaled, nio.ThumbnailResponse), "bob fetches a scaled thumbnail", scaled)
        size = png_size(scaled.body)
        check(size == (320, 240), "320x240 scale thumbnail", size)

        cipher = await bob.download(mxc=encrypted.content_uri)
        check(isinstance(cipher, nio.DownloadResponse), "bob downloads the encrypted attachment", cipher)
        check(cipher.body != secret, "the server stored only ciphertext")
        plain = decrypt_attachment(cipher.body, keys["key"]["k"], keys["hashes"]["sha256"], keys["iv"])
        check(plain == secret, "the attachment decrypts to what alice sent")

        missing = await bob.download(server_name="localhost", media_id="NoSuchMedia")
        check(isinstance(missing, nio.DownloadError) and missing.status_code == "M_NOT_FOUND", "unknown media is 404", missing)
    finally:
        await alice.close()
        await bob.close()


def main() -> None:
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/debug/hearth"
    with running_hearth(binary) as base:
        asyncio.run(exercise(base))


if __name__ == "__main__":
    main()
