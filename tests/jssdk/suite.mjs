// The matrix-js-sdk suite: two people use Trellis through matrix-js-sdk, the engine of
// Element Web and Cinny, as a web client would: login, rooms, history written before a
// join, scrollback, and an end-to-end encrypted conversation with the SDK's Rust crypto.
//
//   scripts/jssdk-test      (installs the pinned SDK, starts a fresh Trellis, runs this)
//
// Each check prints "ok - name" or "not ok - name: why"; the last line counts them, and the
// exit status is non-zero when any failed.

import "fake-indexeddb/auto";

// The SDK and its crypto (tracing from Rust, through the console) log at length: the
// console is theirs and quiet unless JSSDK_VERBOSE=1 (silenced before the SDK is loaded,
// as its loggers keep the console methods they find); our own lines go to stdout.
if (!process.env.JSSDK_VERBOSE) {
    for (const level of ["debug", "info", "log", "trace", "warn", "error"]) console[level] = () => {};
}
const say = (line) => process.stdout.write(`${line}\n`);
const sdk = await import("matrix-js-sdk");

const args = process.argv.slice(2);
const base = args[args.indexOf("--homeserver") + 1];
if (!base || args.indexOf("--homeserver") < 0) {
    console.error("usage: suite.mjs --homeserver URL");
    process.exit(2);
}

const results = [];
async function check(name, fn) {
    try {
        await fn();
        results.push([name, null]);
        say(`ok - ${name}`);
    } catch (e) {
        results.push([name, e]);
        say(`not ok - ${name}: ${e?.stack ?? e}`);
    }
}

function assert(cond, what) {
    if (!cond) throw new Error(what);
}

/** Wait until `test()` holds, polling; fail after `ms`. */
async function until(what, test, ms = 30000) {
    const end = Date.now() + ms;
    for (;;) {
        const v = await test();
        if (v) return v;
        if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 100));
    }
}

/** Register `name` (user-interactive auth with a dummy stage, as Element does). */
async function register(name, password) {
    const tmp = sdk.createClient({ baseUrl: base });
    try {
        await tmp.registerRequest({ username: name, password });
    } catch (e) {
        const session = e?.data?.session;
        assert(session, `register ${name}: no UIA session in ${JSON.stringify(e?.data)}`);
        return await tmp.registerRequest({
            username: name,
            password,
            auth: { type: "m.login.dummy", session },
            initial_device_display_name: `${name}'s js-sdk`,
        });
    }
    throw new Error(`register ${name}: completed without authentication`);
}

/** Log in with a password and start a syncing client with Rust crypto. */
async function login(name, password) {
    const tmp = sdk.createClient({ baseUrl: base });
    const res = await tmp.loginRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: name },
        password,
    });
    assert(res.access_token && res.device_id, "login gives a token and a device");
    assert(res.refresh_token === undefined, "no refresh token unless asked for");
    const client = sdk.createClient({
        baseUrl: base,
        accessToken: res.access_token,
        userId: res.user_id,
        deviceId: res.device_id,
    });
    await client.initRustCrypto({ useIndexedDB: false });
    await client.startClient({ initialSyncLimit: 20, lazyLoadMembers: true });
    await until(`${name}'s first sync`, () => client.isInitialSyncComplete());
    return client;
}

function bodies(room) {
    return room
        .getLiveTimeline()
        .getEvents()
        .filter((e) => e.getType() === "m.room.message")
        .map((e) => e.getContent().body);
}

const password = "correct horse battery staple";
const stamp = Date.now().toString(36);
let alice;
let bob;

await check("register and log in two users with crypto", async () => {
    await register(`alice${stamp}`, password);
    await register(`bob${stamp}`, password);
    alice = await login(`alice${stamp}`, password);
    bob = await login(`bob${stamp}`, password);
    assert(alice.getCrypto(), "alice has crypto");
});

let history;
await check("a room joined after its history was written shows that history", async () => {
    const { room_id } = await alice.createRoom({ preset: "public_chat", name: "History" });
    history = room_id;
    for (let i = 0; i < 30; i++) {
        await alice.sendTextMessage(room_id, `h${i}`);
    }
    await bob.joinRoom(room_id);
    const room = await until("the room in bob's client", () => bob.getRoom(room_id));
    await until("history in bob's timeline", () => bodies(room).includes("h29"));
    // Scroll back to the start: every message once, in order.
    for (let i = 0; i < 20 && room.getLiveTimeline().getPaginationToken("b") !== null; i++) {
        await bob.scrollback(room, 20);
    }
    const seen = bodies(room);
    const want = Array.from({ length: 30 }, (_, i) => `h${i}`);
    assert(JSON.stringify(seen) === JSON.stringify(want), `bob sees ${JSON.stringify(seen)}`);
    const first = room.getLiveTimeline().getEvents()[0];
    assert(first.getType() === "m.room.create", `the timeline starts at ${first.getType()}`);
});

let secret;
await check("an encrypted room: invite, join, messages both ways decrypted", async () => {
    const { room_id } = await alice.createRoom({
        preset: "private_chat",
        name: "Secret",
        invite: [bob.getUserId()],
        initial_state: [
            {
                type: "m.room.encryption",
                state_key: "",
                content: { algorithm: "m.megolm.v1.aes-sha2" },
            },
        ],
    });
    secret = room_id;
    await until("bob's invite", () => bob.getRoom(room_id)?.getMyMembership() === "invite");
    await bob.joinRoom(room_id);
    await until(
        "alice sees bob joined",
        () => alice.getRoom(room_id)?.getMember(bob.getUserId())?.membership === "join",
    );
    const bobRoom = await until("bob's room", () => bob.getRoom(room_id));
    await until("bob knows the room is encrypted", () => bob.isRoomEncrypted(room_id));
    await alice.sendTextMessage(room_id, "hello bob, secretly");
    const got = await until("bob decrypts alice's message", () =>
        bobRoom
            .getLiveTimeline()
            .getEvents()
            .find((e) => e.getContent().body === "hello bob, secretly"),
    );
    assert(got.isEncrypted(), "it was sent encrypted");
    assert(got.getWireType() === "m.room.encrypted", `wire type ${got.getWireType()}`);
    await bob.sendTextMessage(room_id, "hello alice");
    const aliceRoom = alice.getRoom(room_id);
    const back = await until("alice decrypts bob's answer", () =>
        aliceRoom
            .getLiveTimeline()
            .getEvents()
            .find((e) => e.getContent().body === "hello alice"),
    );
    assert(back.isEncrypted(), "the answer was encrypted");
});

await check("edit and delete a message", async () => {
    const { event_id } = await alice.sendTextMessage(history, "typo");
    await alice.sendEvent(history, "m.room.message", {
        "msgtype": "m.text",
        "body": "* fixed",
        "m.new_content": { msgtype: "m.text", body: "fixed" },
        "m.relates_to": { rel_type: "m.replace", event_id },
    });
    await alice.redactEvent(history, event_id);
    const room = bob.getRoom(history);
    await until("bob sees the message deleted", () => {
        const e = room.findEventById(event_id);
        return e && e.isRedacted();
    });
});

for (const c of [alice, bob]) c?.stopClient();
const failed = results.filter(([, e]) => e).length;
say(`${results.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
