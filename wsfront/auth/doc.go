// Package auth verifies the credentials a websocket client presents (a JWT,
// or a bare user name in insecure development mode) and answers whether the
// resulting identity may join, publish to or read a room. It owns token
// parsing and room patterns; it knows nothing of sockets or raft.
//
// # Tokens
//
// A token is a JWT signed with HMAC (HS256, HS384, HS512), RSA (RS256,
// RS384, RS512, PS256, PS384, PS512) or Ed25519 (EdDSA). Only the algorithm
// families of the configured keys are accepted, and "none" never is, so a
// token cannot pick the kind of key it is checked against. Its claims look
// like this:
//
//	{"sub": "alice", "exp": 1790000000,
//	 "herald": {"join": ["lobby", "team-*"], "publish": ["lobby"], "read": ["*"]}}
//
// Claim by claim:
//
//   - "sub" names the user: required, 1 to 256 bytes of UTF-8 without
//     control characters.
//   - "exp", "nbf" and "iat" are checked with the configured leeway. "exp"
//     is optional unless Config.RequireExpiry is set. Identity.Expired uses
//     the same leeway, so a token is good until exp + leeway both when it
//     is presented and on every request made with it afterwards.
//   - "iss" must equal Config.Issuer and "aud" must contain Config.Audience
//     when those are set.
//   - "herald" holds the room grants. "join", "publish" and "read" each list
//     the room patterns for that action; a missing or null list grants
//     nothing, and so does a missing "herald". "rooms" lists patterns
//     granted for all three actions, in addition to the specific lists. Any
//     other key is refused rather than ignored, so a misspelt action fails
//     loudly instead of silently granting nothing.
//
// A room pattern is an exact room name, or a prefix ending in "*": "team-*"
// matches "team-" and every name that starts with it, and "*" matches every
// room. A "*" anywhere but at the end is an error. A token carries at most
// 1,000 patterns in all, each at most 1,024 bytes (the longest room name),
// and the whole token is at most 256 KiB.
//
// # Insecure mode
//
// With Config.Insecure set, Verifier.User accepts a bare user name without
// any proof and grants it every action on every room. It exists for local
// development and demos only; tokens are still verified if keys are
// configured.
//
// # Errors
//
// Every refusal wraps ErrUnauthorized and says what is wrong without
// echoing the token, so the message is safe to log and to send back to the
// client.
package auth
