"""Token-exchange benchmark: what one ``TokenExchange`` costs the broker's event loop.

:meth:`felix_runtime.exchange.TokenExchanger.exchange` runs on the broker's loop: it
verifies the identity token (RS256, ES256 or EdDSA), matches the rules, signs the Felix
token with Ed25519 and reads it back. This times it in-process for identity tokens of each
algorithm, in rounds that take the three in turn (so they see the same machine load), and
prints the median, fastest and slowest round per exchange. For comparison it also times the
plain verification of a Felix token (what a ``Hello`` with a token costs).

Usage: ``python benchmarks/token_exchange.py [--number N] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from felix_core.access import Permission
from felix_runtime.exchange import (
    ClaimRule,
    ExternalIssuer,
    StaticKeys,
    TokenExchanger,
    read_external_jwks,
)
from felix_runtime.tokens import TokenVerifier, issue_token, key_id

ISSUER = "https://idp.example.com"


def _case(alg: str) -> Callable[[], object]:
    """One exchange of an ``alg`` identity token, ready to call."""
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | Ed25519PrivateKey
    if alg == "RS256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    elif alg == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
        jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        key = Ed25519PrivateKey.generate()
        jwk = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    keys = StaticKeys(read_external_jwks(f'{{"keys": [{_with_kid(jwk)}]}}'))
    rules = [ClaimRule(tenant="acme", permissions=(Permission.parse("*"),), group="eng")]
    exchanger = TokenExchanger(
        [ExternalIssuer(issuer=ISSUER, audience="felix", keys=keys)],
        rules,
        Ed25519PrivateKey.generate(),
    )
    now = time.time()
    claims = {"iss": ISSUER, "sub": "alice", "aud": "felix", "exp": int(now) + 3600}
    token = jwt.encode({**claims, "groups": ["eng"]}, key, algorithm=alg, headers={"kid": "k"})
    return lambda: exchanger.exchange(token, now)


def _with_kid(jwk: dict[str, str]) -> str:
    return json.dumps({**jwk, "kid": "k", "use": "sig"})


def _verify_case() -> Callable[[], object]:
    key = Ed25519PrivateKey.generate()
    now = time.time()
    token = issue_token(key, subject="a", tenant="acme", now=now, ttl=900, token_id="t")
    verifier = TokenVerifier({"felix": {key_id(key.public_key()): key.public_key()}})
    return lambda: verifier.verify(token, now)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=200, help="calls per round")
    parser.add_argument("--repeat", type=int, default=7, help="rounds")
    args = parser.parse_args()
    cases = {f"exchange {alg}": _case(alg) for alg in ("RS256", "ES256", "EdDSA")}
    cases["verify Felix token (Hello)"] = _verify_case()
    rounds: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeat):
        for name, call in cases.items():
            start = time.perf_counter()
            for _ in range(args.number):
                call()
            rounds[name].append((time.perf_counter() - start) / args.number * 1e6)
    print(f"load average {os.getloadavg()[0]:.2f}; {args.repeat} rounds of {args.number}")
    for name, times in rounds.items():
        print(
            f"{name:30s} median {statistics.median(times):7.0f} us"
            f"  (rounds {min(times):.0f} .. {max(times):.0f})"
        )


if __name__ == "__main__":
    main()
