"""
What every host variant's smoke suite shares (``scripts/host_smoke.py`` puts it on the path).

* :mod:`smoke_kit.installation`: the app is the installed wheel, with its
  templates and static files, and the host's checks pass: test functions a
  host's suite imports;
* :mod:`smoke_kit.scenario`: one scenario (``scenario.json``) built with the
  host's own models and every face of the app asked about it, as a dump two
  hosts holding it must share (``host_smoke.py --compare-with``).
"""
