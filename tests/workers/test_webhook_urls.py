"""SSRF refusals of webhook URLs: internal addresses in every spelling, non-http schemes and
names that do not resolve are refused naming the field; the allow-list lets internal hosts in."""

from __future__ import annotations

import ipaddress

import pytest

from promptrecord.domain.errors import InvalidInput
from promptrecord.settings import Settings
from promptrecord.workers.webhook_urls import check_url, checked_addresses, why_internal

PLAIN = Settings()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://10.0.0.5/", "private"),
        ("https://192.168.1.10:8443/hook", "private"),
        ("http://172.16.0.1/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[::1]/", "loopback"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[fd00::1]/", "private"),
        ("http://[::ffff:10.0.0.5]/", "private"),  # IPv4-mapped IPv6
        ("http://[::ffff:127.0.0.1]:8080/", "loopback"),
        ("http://[64:ff9b::a9fe:a9fe]/", "link-local"),  # NAT64 of 169.254.169.254
        ("http://localhost/", "localhost resolves to 127.0.0.1, which is a loopback"),
        ("http://LOCALHOST/x", "loopback"),
        ("http://2130706433/", "2130706433 resolves to 127.0.0.1"),  # decimal 127.0.0.1
        ("http://0x7f.1/", "loopback"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://100.64.1.1/", "shared"),
        ("http://224.0.0.1/", "multicast"),
        ("http://240.0.0.1/", "reserved"),
    ],
)
def test_internal_addresses_are_refused(url: str, says: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_url(url, PLAIN)
    assert caught.value.code == "webhook_url_refused"
    assert caught.value.field == "url"
    assert says in caught.value.detail
    assert "PROMPTRECORD_WEBHOOK_ALLOW_HOSTS" in (caught.value.hint or "")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://files.example.com/hook", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("gopher://127.0.0.1:6379/_", "http:// or https://"),
        ("https:///path-only", "names no host"),
        ("http://hooks.invalid/", "does not resolve"),
        ("http://example.com:99999/", "not a valid URL"),
    ],
)
def test_other_bad_urls_are_refused_naming_the_field(url: str, says: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_url(url, PLAIN, field="body.url")
    assert caught.value.code == "webhook_url_refused"
    assert caught.value.field == "body.url"
    assert says in caught.value.detail


def test_public_addresses_are_accepted() -> None:
    check_url("https://93.184.215.14/hooks", PLAIN)
    check_url("http://[2606:4700:4700::1111]:8080/", PLAIN)
    assert checked_addresses("https://8.8.8.8/", PLAIN) == [ipaddress.ip_address("8.8.8.8")]


def test_the_allow_list_admits_names_addresses_and_networks() -> None:
    tests = Settings(webhook_allow_hosts="127.0.0.1, ::1 ,localhost")
    check_url("http://127.0.0.1:8123/hook", tests)
    check_url("http://[::1]:8123/hook", tests)
    check_url("http://localhost:8123/hook", tests)
    check_url("http://2130706433/", tests)  # another spelling of an allowed address
    with pytest.raises(InvalidInput):
        check_url("http://10.0.0.5/", tests)  # only what is listed
    internal = Settings(webhook_allow_hosts="10.0.0.0/8,[fd00::]/8")
    check_url("http://10.20.30.40/", internal)
    check_url("http://[fd00::5]/", internal)
    with pytest.raises(InvalidInput):
        check_url("http://192.168.0.1/", internal)
    with pytest.raises(InvalidInput):  # an allowed name still has to resolve
        check_url("http://hooks.invalid/", Settings(webhook_allow_hosts="hooks.invalid"))


def test_public_addresses_have_no_internal_kind() -> None:
    assert why_internal(ipaddress.ip_address("8.8.8.8")) is None
    assert why_internal(ipaddress.ip_address("::ffff:8.8.8.8")) is None
    assert why_internal(ipaddress.ip_address("192.0.2.1")) == "private"  # documentation range
