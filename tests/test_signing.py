"""Signed artifacts (issue 16, item 2, optional part): ``shiftc sign`` writes an Ed25519 signature of
the artifact id to ``meta.json.sig``; ``shiftc verify --public-key`` / ``shiftc.load(public_key=)``
refuse a folder whose signature is missing, malformed, by another key or for other bytes, with one
``InputError`` line (CLI exit 2) before any code is loaded.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import sys
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

import shiftc
from shiftc import artifact
from shiftc.cli import main

pytest.importorskip("cryptography")
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa  # noqa: E402

META = {
    "inputs": [{"name": "x", "shape": [1, 4], "dtype": "float32"}],
    "outputs": [{"name": "y", "shape": [1, 4], "dtype": "float32"}],
    "target": {"name": "x86", "options": {}},
}


def write_keys(folder: Path, name: str, key=None, password: bytes | None = None) -> tuple[Path, Path]:
    """(private PEM, public PEM) of a fresh Ed25519 key (or ``key``) under ``folder``."""
    key = key or ed25519.Ed25519PrivateKey.generate()
    enc = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    priv, pub = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


@pytest.fixture
def keys(tmp_path):
    return write_keys(tmp_path, "key")


@pytest.fixture
def small(tmp_path):
    """A hand-made (no TVM) artifact folder."""
    with artifact.staging(tmp_path / "small") as tmp:
        (tmp / "model.so").write_bytes(b"not really code")
        artifact.write_meta(tmp, META)
    return tmp_path / "small"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    import numpy as np
    from onnx import TensorProto, helper

    tmp = tmp_path_factory.mktemp("sign")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp / "m.onnx"))
    shiftc.compile(tmp / "m.onnx", "x86", output=tmp / "art")
    np.save(tmp / "x.npy", np.full((1, 4), -1.0, np.float32))
    return tmp / "art", tmp / "x.npy"


@pytest.fixture
def art(compiled, tmp_path):
    shutil.copytree(compiled[0], tmp_path / "art")
    return tmp_path / "art"


@pytest.fixture
def no_code(monkeypatch):
    from shiftc.targets.x86 import X86

    def loaded(*_a, **_k):
        raise AssertionError("code was loaded from a refused artifact")

    monkeypatch.setattr(X86, "load", loaded)


def cli(*args: str):
    res = CliRunner().invoke(main, list(map(str, args)))
    return res.exit_code, res.stdout, res.stderr


def refused(folder: Path, **kw) -> str:
    with pytest.raises(shiftc.InputError) as info:
        artifact.verify(folder, **kw)
    return str(info.value)


# ---------------------------------------------------------------- the API


def test_sign_then_verify_and_load(art, keys, compiled):
    import numpy as np

    aid = artifact.artifact_id(art)
    sig = artifact.sign(art, keys[0])
    assert sig == art / "meta.json.sig" and len(base64.b64decode(sig.read_bytes())) == 64
    assert artifact.artifact_id(art) == aid  # the signature is outside the id
    artifact.verify(art, expect=aid, public_key=keys[1])
    artifact.verify(art)  # without a key the signature is allowed and ignored
    cm = shiftc.load(art, expect=aid, public_key=keys[1].read_bytes())
    assert np.array_equal(cm.run(np.load(compiled[1]))["y"], np.zeros((1, 4), np.float32))
    saved = cm.save(art.parent / "copy")  # a copy keeps its signature
    shiftc.load(saved, expect=aid, public_key=keys[1])


def test_every_changed_byte_of_meta_json_fails(small, keys):
    artifact.sign(small, keys[0])
    good = (small / "meta.json").read_bytes()
    for i in range(len(good)):
        bad = bytearray(good)
        bad[i] ^= 0x01
        (small / "meta.json").write_bytes(bytes(bad))
        assert "does not verify with the public key" in refused(small, public_key=keys[1]), i
    (small / "meta.json").write_bytes(good + b" ")
    assert "does not verify" in refused(small, public_key=keys[1])
    (small / "meta.json").write_bytes(good)
    artifact.verify(small, public_key=keys[1])


def test_a_signature_by_another_key_fails(small, keys, tmp_path):
    _, other_pub = write_keys(tmp_path, "other")
    artifact.sign(small, keys[0])
    assert "another key signed it" in refused(small, public_key=other_pub)
    other_priv, _ = write_keys(tmp_path, "other")
    artifact.sign(small, other_priv)  # re-signing replaces the signature
    artifact.verify(small, public_key=tmp_path / "other.pub.pem")
    assert "does not verify" in refused(small, public_key=keys[1])


def test_a_signature_cannot_be_moved_to_another_artifact(small, keys, tmp_path):
    with artifact.staging(tmp_path / "other") as tmp:
        (tmp / "model.so").write_bytes(b"other code")
        artifact.write_meta(tmp, META)
    artifact.sign(small, keys[0])
    shutil.copy(small / "meta.json.sig", tmp_path / "other" / "meta.json.sig")
    assert "does not verify" in refused(tmp_path / "other", public_key=keys[1])


def test_load_with_a_public_key_refuses_an_unsigned_artifact(art, keys, no_code):
    with pytest.raises(shiftc.InputError, match=r"is not signed \(no meta.json.sig\)"):
        shiftc.load(art, public_key=keys[1])


@pytest.mark.parametrize("content", [b"", b"not base64!\n", base64.b64encode(b"x" * 63), b"A" * 2000])
def test_a_malformed_signature_file_is_refused(small, keys, content):
    artifact.sign(small, keys[0])
    (small / "meta.json.sig").write_bytes(content)
    msg = refused(small, public_key=keys[1])
    assert "meta.json.sig" in msg and ("not an Ed25519 signature" in msg or "limit" in msg)


def test_the_signature_file_is_the_only_exception_and_must_be_a_regular_file(small, keys, tmp_path):
    artifact.sign(small, keys[0])
    (small / "meta.json.sig.bak").write_bytes((small / "meta.json.sig").read_bytes())
    assert "not listed" in refused(small)
    (small / "meta.json.sig.bak").unlink()
    real = tmp_path / "elsewhere.sig"
    (small / "meta.json.sig").rename(real)
    (small / "meta.json.sig").symlink_to(real)
    assert "symbolic link" in refused(small)
    assert "symbolic link" in refused(small, public_key=keys[1])


def test_meta_json_may_not_list_the_signature(small):
    import json

    meta = json.loads((small / "meta.json").read_text())
    meta["files"]["meta.json.sig"] = "0" * 64
    (small / "meta.json").write_text(json.dumps(meta))
    assert "'meta.json.sig', which it cannot cover" in refused(small)


def test_sign_refuses_a_modified_artifact_or_another_id(small, keys):
    aid = artifact.artifact_id(small)
    (small / "model.so").write_bytes(b"changed")
    with pytest.raises(shiftc.InputError, match="artifact was modified"):
        artifact.sign(small, keys[0])
    (small / "model.so").write_bytes(b"not really code")
    with pytest.raises(shiftc.InputError, match="not the expected"):
        artifact.sign(small, keys[0], expect="0" * 64)
    artifact.sign(small, keys[0], expect=aid)
    assert artifact.verify(small, public_key=keys[1])


def test_bad_keys_are_refused_with_one_line(small, keys, tmp_path):
    enc, _ = write_keys(tmp_path, "enc", password=b"secret")
    with pytest.raises(shiftc.InputError, match="encrypted key"):
        artifact.sign(small, enc)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_priv, rsa_pub = write_keys(tmp_path, "rsa", key=rsa_key)
    with pytest.raises(shiftc.InputError, match="not an Ed25519 private key"):
        artifact.sign(small, rsa_priv)
    artifact.sign(small, keys[0])
    with pytest.raises(shiftc.InputError, match="not an Ed25519 public key"):
        artifact.verify(small, public_key=rsa_pub)
    with pytest.raises(shiftc.InputError, match="not a PEM public key"):
        artifact.verify(small, public_key=keys[0])  # the private key where the public one goes
    with pytest.raises(shiftc.InputError, match="is missing"):
        artifact.verify(small, public_key=tmp_path / "nope.pem")


def test_without_cryptography_the_error_names_the_extra(small, keys, monkeypatch):
    for name in [m for m in sys.modules if m == "cryptography" or m.startswith("cryptography.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "cryptography", None)
    with pytest.raises(shiftc.ToolchainError, match=r"pip install 'shiftc\[sign\]'"):
        artifact.verify(small, public_key=keys[1])
    code, _, err = cli("sign", small, "--key", keys[0])
    assert code == 4 and err.strip().splitlines() == ["error: signing needs the 'cryptography' package: pip install 'shiftc[sign]'"]
    artifact.verify(small)  # verifying without a key needs no extra


# ---------------------------------------------------------------- the command line


def test_cli_sign_and_verify(art, keys):
    aid = hashlib.sha256((art / "meta.json").read_bytes()).hexdigest()
    code, out, err = cli("sign", art, "--key", keys[0], "--expect", aid)
    assert code == 0, err
    assert aid in out and "meta.json.sig" in out
    code, out, err = cli("verify", art, "--expect", aid, "--public-key", keys[1])
    assert (code, out.strip(), err) == (0, f"ok {aid}, signature ok", "")
    code, out, err = cli("verify", art)
    assert (code, out.strip()) == (0, f"ok {aid}")


def test_cli_failures_exit_2_with_one_line(art, keys, tmp_path, no_code):
    _, other_pub = write_keys(tmp_path, "other")
    unsigned = cli("verify", art, "--public-key", keys[1])
    aid = artifact.artifact_id(art)
    artifact.sign(art, keys[0])
    other = cli("verify", art, "--public-key", other_pub)
    wrong_id = cli("verify", art, "--expect", "0" * 64, "--public-key", keys[1])
    bad_key = cli("verify", art, "--public-key", tmp_path / "missing.pem")
    (art / "meta.json").write_bytes((art / "meta.json").read_bytes().replace(b'"x86"', b'"x87"', 1))
    tampered = cli("verify", art, "--public-key", keys[1])
    sign_tampered = cli("sign", art, "--key", keys[0], "--expect", aid)
    for name, (code, out, err) in {"unsigned": unsigned, "other key": other, "wrong id": wrong_id,
                                   "missing key": bad_key, "tampered": tampered, "sign tampered": sign_tampered}.items():
        assert code == 2, (name, out, err)
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), (name, err)
    assert "not signed" in unsigned[2] and "another key" in other[2] and "does not verify" in tampered[2]
