"""Which DRF authentication classes the analytics endpoints use."""

from rest_framework.settings import api_settings

from ..conf import app_settings


def analytics_authenticators():
    """Instances of ``FLOWPILOT_ANALYTICS["AUTHENTICATION_CLASSES"]``, else of the host's DRF defaults.

    Read at each request rather than bound when the view class is defined (as
    ``APIView.authentication_classes`` is), so both settings can change under
    ``override_settings``. The first class decides between 401 and 403 for an
    anonymous caller (DRF answers 401 only when it sends ``WWW-Authenticate``).
    """
    classes = app_settings.AUTHENTICATION_CLASSES
    if classes is None:
        classes = api_settings.DEFAULT_AUTHENTICATION_CLASSES
    return [cls() for cls in classes]
