# Sourced by scripts/test.sh: install Debian's Chromium and ChromeDriver (packages chromium,
# chromium-driver) when missing, for the verification page's browser test
# (tests/test_page_browser.py), and export TRACEMARK_TEST_CHROMIUM so that the test fails
# instead of skipping when the browser does not start. A no-op when both are installed.
# TRACEMARK_SKIP_BROWSER=1 skips all of this (the test is then skipped, with the reason).
if [ "${TRACEMARK_SKIP_BROWSER:-0}" = "1" ]; then
  echo "TRACEMARK_SKIP_BROWSER=1: the browser test will be skipped" >&2
  return 0
fi
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  echo "installing Chromium (Debian packages chromium, chromium-driver)..." >&2
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium chromium-driver >/dev/null
fi
[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] \
  || { echo "chromium or chromedriver not found after installing" >&2; exit 1; }
export TRACEMARK_TEST_CHROMIUM=/usr/bin/chromium
