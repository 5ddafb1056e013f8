from composition.container import build_app
from composition.settings import Settings
with build_app(Settings(store_url="surrealkv:///tmp/s7-user/stores/crash2")) as app:
    print("unclean:", app.unclean_shutdown)
    print("broken:", app.check_after_crash())
    print("unclean after:", app.unclean_shutdown)
    r = app.orchestrator.recover()
    print("recover:", r)
