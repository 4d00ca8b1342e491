"""A local S3 server for tests: moto's server in a subprocess on 127.0.0.1."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
       "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class LocalS3:
  """Starts moto's S3 server and points this process's environment (and so its
  subprocesses') at it; restores the environment and stops the server on exit."""

  def __init__(self):
    self.port = _free_port()
    self.endpoint = f"http://127.0.0.1:{self.port}"
    self._proc = None
    self._saved = {}

  def __enter__(self):
    self._proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
      try:
        urllib.request.urlopen(self.endpoint, timeout=2).close()
        break
      except OSError:
        if self._proc.poll() is not None or time.monotonic() > deadline:
          self.__exit__(None, None, None)
          raise RuntimeError(f"moto server did not start on {self.endpoint}")
        time.sleep(0.2)
    env = dict(ENV, AWS_ENDPOINT_URL=self.endpoint, S3_ENDPOINT=self.endpoint)
    for k, v in env.items():
      self._saved[k] = os.environ.get(k)
      os.environ[k] = v
    return self

  def new_bucket(self) -> str:
    import boto3  # pylint: disable=import-outside-toplevel
    name = f"movenerf-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=self.endpoint).create_bucket(Bucket=name)
    return f"s3://{name}"

  def keys(self, url: str) -> list[str]:
    """Every key under ``url`` (s3://bucket/prefix), fresh from the server."""
    import boto3  # pylint: disable=import-outside-toplevel
    bucket, _, prefix = url[len("s3://"):].partition("/")
    client = boto3.client("s3", endpoint_url=self.endpoint)
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                 Prefix=prefix):
      keys += [o["Key"] for o in page.get("Contents", [])]
    return keys

  def __exit__(self, *exc):
    for k, v in self._saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
    if self._proc is not None:
      self._proc.terminate()
      try:
        self._proc.wait(10)
      except subprocess.TimeoutExpired:
        self._proc.kill()
    return False
